"""A second worker for the `cpu` run of papers/early_phase.ipynb on a 2-core machine.

The notebook trains its runs one after another. This script, started beside it (or before it) with the same
TICKETLAB_HOME, trains the same runs (the same specs, so the same store entries) in another order, so that two cores
work at once. It takes the presets and the data from the notebook itself (its cells that define `PRESETS`, `data`,
`hp` and `imps`), so it cannot drift from it. Each run is trained once: a process that asks for a run the other is
training waits on the run's lock and then reuses it (`ticketlab.runs`). The numbers in the notebook are the same as
if it had trained everything itself; only the wall time differs.

    TICKETLAB_HOME=<store> OMP_NUM_THREADS=1 python papers/results/early_phase_worker.py fig1 perturb pretrain
"""
import sys, time
from pathlib import Path

from ticketlab.papers import notebook_namespace
ns = notebook_namespace(Path(__file__).parents[1]/'early_phase.ipynb', ['PRESETS = {', 'imps = [ImpHparams', '# definitions only'],
                        'cpu', '/tmp/early_phase_worker')   # the preset cell, the data cell, and the later sections' job definitions
ns['store'] = ns['Store']()                               # the job definitions' functions train into the store
P, hp, imps, data, store = ns['P'], ns['hp'], ns['imps'], ns['data'], ns['store']
PARTS = {'perturb': ns['run_perturbations'], 'pretrain': ns['run_pretraining']}   # Figures 4-8 and Figure 9
from ticketlab.runs import replicate
from ticketlab.imp import imp, baseline
t0 = time.time()
def log(msg): print(f'[{time.time() - t0:6.0f} s] {msg}', flush=True)
kw = dict(data=data, eval_every=hp.training_steps)

for part in sys.argv[1:]:
    if part in ('fig1', 'fig1-forward'):   # fig1: the last replicate and the latest rewind step first (the notebook's order reversed)
        order = (lambda x: list(x)) if part == 'fig1-forward' else (lambda x: list(reversed(list(x))))
        for r in order(range(P['replicates'])):
            for i, ih in order(enumerate(imps)):
                recs = imp(replicate(hp, r), ih, store, **kw)
                if i == 0:
                    for rec in recs[1:]:
                        if P['reinit_levels'] is None or rec['level'] in P['reinit_levels']:
                            baseline('reinit', replicate(hp, r), rec, recs[0]['run'], 0, store, **kw)
                log(f'fig1: replicate {r}, {ih.rewind_step}')
    elif part in PARTS: PARTS[part](reverse=True); log(part)   # the notebook's own jobs, in the opposite order
    else: raise SystemExit(f'unknown part {part!r}; choose from fig1, fig1-forward, {", ".join(PARTS)}')
