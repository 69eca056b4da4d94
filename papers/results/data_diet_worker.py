"""A second worker for the `cpu` run of papers/data_diet.ipynb on a 2-core machine.

The notebook trains its runs one after another. This script, started beside it with the same TICKETLAB_HOME, trains the
same runs (the same library calls on the same hyperparameters, so the same store entries) in roughly the opposite order:
Figure 6's all-data runs and Figure 4 (which need no scores of the clean training set) first, then App. B.1, Figure 6's
subsets, Figure 10, Figure 5's children and Figure 2's conditions, each list reversed, so that two cores work at once and
the two processes meet in the middle. It takes the presets, the data and every hyperparameter object from the notebook
itself (its cell that defines `PRESETS` and its cell that defines `hp`, `ihp`, `dhp`, `dhp_noise`, `dhp_barriers` and
`hp_warmup`), so it cannot drift from it. Each run is trained once: a process that asks for a run the other is training
waits on the run's lock and then reuses it (`ticketlab.runs`); scores are saved under their name and loaded by the other.
The numbers in the notebook are the same as if it had trained everything itself; only the wall time differs.

    TICKETLAB_HOME=<store> OMP_NUM_THREADS=1 python papers/results/data_diet_worker.py [smoke|cpu|paper]
"""
import sys, time
from pathlib import Path

preset = sys.argv[1] if len(sys.argv) > 1 else 'cpu'
from ticketlab.papers import notebook_namespace
ns = notebook_namespace(Path(__file__).parents[1]/'data_diet.ipynb', ['PRESETS = {', 'dhp = DataDietHparams('], preset)   # its preset and data cells
P, hp, ihp, dhp, dhp_noise, dhp_barriers, hp_warmup = (ns[k] for k in ('P', 'hp', 'ihp', 'dhp', 'dhp_noise', 'dhp_barriers', 'hp_warmup'))
data, store, train, test = ns['data'], ns['store'], ns['train'], ns['test']
from ticketlab.runs import replicate
from ticketlab.el2n import ensemble_scores
from ticketlab.datadiet import DataDietHparams, data_diet_experiment, pretraining_set, diet_subset
from ticketlab.diet_landscape import diet_barriers, lmc_example_scores
from ticketlab.diet_warmup import warmup_experiment, pretraining_gradient_norms

t0 = time.time()
def log(msg): print(f'[{time.time() - t0:6.0f} s] {msg}', flush=True)
def conditions(d):
    "One DataDietHparams per condition of `d` (a subset at one size, or one all-data reference), in the notebook's order."
    return ([d.replace(subsets=w, sizes=str(m), references='') for w in d.subset_list() for m in d.size_list()]
            + [d.replace(subsets='', references=t) for t in d.reference_list()])
def label(d): return f'{d.subsets} M={d.sizes}' if d.subsets else f'all data t_r={d.references}'

# Figure 6, all the data (the notebook's last jobs but App. B.1): no scores needed
for r in reversed(range(P['warmup_replicates'])):
    for w in reversed(P['warmups']):
        warmup_experiment(replicate(hp_warmup, r), [w], (), (), None, 1, store, data=data); log(f'Figure 6: all data, warmup {w}, replicate {r}')
# Figure 4: the ensembles of the corrupted labels, then the conditions (IMP from pre-training on the corrupted labels)
for f in reversed(P['noises']):
    d = dhp_noise.replace(noise=f)
    noisy = ensemble_scores(hp, P['el2n_K'], P['el2n_steps'], 'el2n', store, data=(pretraining_set(train, d), test), progress=False)
    log(f'Figure 4: EL2N of the {f:.0%} noisy labels')
    for r in reversed(range(P['noise_replicates'])):
        for c in reversed(conditions(d)):
            data_diet_experiment(replicate(hp, r), c, ihp, noisy, 1, store, data=data); log(f'Figure 4: noise {f}, {label(c)}, replicate {r}')
# the clean scores (the notebook computes them first: by now they are usually saved)
for r in range(min(P['replicates'], P['el2n_K'])):
    ns['dense_run'](replicate(hp, r), ['0it', P['el2n_steps']], store, data=data, eval_every=hp.training_steps, progress=False)
el2n = ensemble_scores(hp, P['el2n_K'], P['el2n_steps'], 'el2n', store, data=data, progress=False); log('Def. 2.1: EL2N')
# App. B.1
gn_sets = {'random': diet_subset(train, 'random', P['gradnorm_size']), 'easiest': diet_subset(train, 'easiest', P['gradnorm_size'], el2n)}
pretraining_gradient_norms(hp, gn_sets, P['gradnorm_steps'], store, data=data, lr=P['pretrain_lr'] or None); log('App. B.1')
# Figure 6, the subsets
for r in reversed(range(P['warmup_replicates'])):
    for w in reversed([w for w in P['warmups'] if ns['plan'](hp_warmup, train).it(w) > 0]):
        for s in ('hardest', 'random', 'easiest'):
            for m in reversed(P['warmup_sizes']):
                warmup_experiment(replicate(hp_warmup, r), [w], (s,), (m,), el2n, 1, store, data=data); log(f'Figure 6: {s} M={m}, warmup {w}, replicate {r}')
# Figures 9 and 10
lmcs = [lmc_example_scores(hp, s, P['barrier_children'], P['lmc_replicates'], store, data=data) for s in reversed(P['lmc_steps'])]
log('Figure 9: LMC scores')
if P['lmc_subsets']:
    d10 = DataDietHparams(subsets='easiest', sizes=str(P['fig2_size']), steps=P['t_half'], references='', pretrain_lr=P['pretrain_lr'])
    for r in reversed(range(P['replicates'])):
        data_diet_experiment(replicate(hp, r), d10, ihp, lmcs[0], 1, store, data=data); log(f'Figure 10: replicate {r}')
# Figure 5's children, then Figure 2
for r in reversed(range(P['barrier_replicates'])):
    for c in reversed(conditions(dhp_barriers)):
        diet_barriers(replicate(hp, r), c, el2n, P['barrier_children'], 1, store, data=data); log(f'Figure 5: {label(c)}, replicate {r}')
for r in reversed(range(P['replicates'])):
    for c in reversed(conditions(dhp)):
        data_diet_experiment(replicate(hp, r), c, ihp, el2n, 1, store, data=data); log(f'Figure 2: {label(c)}, replicate {r}')
log('done')
