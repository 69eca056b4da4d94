"""A second worker for the `cpu` run of papers/unmasking.ipynb on a 2-core machine.

The notebook trains its runs one after another. This script, started beside it with the same TICKETLAB_HOME, trains the
same runs (the same library calls with the same arguments, so the same store entries) in roughly the opposite order:
Figure 2's replicates from the last (each its dense run with the notebook's checkpoints, then IMP-WR from the latest
rewind step to the earliest), then the later figures from the end of the notebook back: Figure 10 (a fixed 20% where
the preset trains it, then the adaptive ratio), Figure 7's IMP-FT, then IMP-LRR (the notebook trains LRR first), Figure
8's LRR masks from the rewind point, Figure 5's pruned-and-retrained networks and Figure 4's perturbed retrainings,
each list reversed, so that two cores work at once and the two processes meet in the middle. It takes the presets, the
data and the hyperparameters from the notebook itself (its cell that defines `PRESETS` and its cell that defines `hp`,
`ks`, `tau`, `eval_test` and `nominal_density`), and builds Figure 4's norms and Figure 5's masks with the notebook's own
expressions (tests/test_papers.py checks that they are the notebook's lines), so it cannot drift from it. Each run is
trained once: a process that asks for a run the other is training waits on the run's lock and then reuses it
(`ticketlab.runs`). The numbers in the notebook are the same as if it had trained everything itself; only the wall time
differs. Not here: what the store does not keep (the paths, heatmap and slices, the Hessian, the adaptive heuristic's
training-loss sweeps; `robustness` also measures its barriers here, about 20 s a level under `cpu`).

    TICKETLAB_HOME=<store> OMP_NUM_THREADS=1 python papers/results/unmasking_worker.py [smoke|cpu|paper]
"""
import sys, time
from pathlib import Path

preset = sys.argv[1] if len(sys.argv) > 1 else 'cpu'
from ticketlab.papers import notebook_namespace
ns = notebook_namespace(Path(__file__).parents[1]/'unmasking.ipynb', ['PRESETS = {', 'hp = TrainHparams('], preset)   # its preset and data cells
P, hp, data, store = ns['P'], ns['hp'], ns['data'], ns['store']
ks, tau, T, ipe, eval_test, nominal_density = (ns[k] for k in ('ks', 'tau', 'T', 'ipe', 'eval_test', 'nominal_density'))
from ticketlab.core import derive_seed
from ticketlab.runs import dense_run, replicate
from ticketlab.masks import random_prune_fraction
from ticketlab.weights import mask_state, weight_distances
from ticketlab.imp import ImpHparams, imp, prune_to, train_rewound
from ticketlab.lmc import final_weights, robustness

t0 = time.time()
def log(msg): print(f'[{time.time() - t0:6.0f} s] {msg}', flush=True)

# Figure 2: the dense runs (with every checkpoint the notebook asks for: none is replayed later) and IMP-WR, last replicate first
imps = {k: ImpHparams(strategy='wr', rewind_step=f'{k}it', fraction=P['fraction'], levels=P['levels']) for k in ks}
dense = {}
for r in reversed(range(P['replicates'])):
    dense[r] = dense_run(replicate(hp, r), ks + [T - ipe], store, data=data, eval_every=hp.training_steps, progress=False)
    log(f'Figure 2: dense, replicate {r}')
    for k, ih in reversed(imps.items()):
        imp(replicate(hp, r), ih, store, data=data, eval_every=hp.training_steps); log(f'Figure 2: IMP-WR k = {k}, replicate {r}')
dense = [dense[r] for r in range(P['replicates'])]
# Figure 10: a fixed 20% (only where the preset trains it), then the adaptive pruning ratio
if P['fraction'] != 0.2 and P['fixed20_levels']:
    imp(hp, ImpHparams(strategy='wr', rewind_step=f'{tau}it', fraction=0.2, levels=P['fixed20_levels']), store, data=data,
        eval_every=hp.training_steps); log('Figure 10: fixed 20%')
imp(hp, ImpHparams(strategy='wr', rewind_step=f'{tau}it', adaptive=True, levels=P['adaptive_levels']), store, data=data,
    eval_every=hp.training_steps); log('Figure 10: adaptive')
# Figures 7 and 9: FT first (the notebook trains LRR first), then LRR; Figure 8: LRR's masks from the rewind point
strat = {}
for s in ('ft', 'lrr'):
    strat[s] = imp(hp, ImpHparams(strategy=s, rewind_step=f'{tau}it', fraction=P['fraction'], levels=P['retrain_levels']), store,
                   data=data, eval_every=hp.training_steps)
    log(f'Figure 7: IMP-{s.upper()}')
lrr = strat['lrr']
lv8 = [L for L in P['lrr_rewound_levels'] if L <= P['retrain_levels']]
train_rewound(hp, dense[0], [lrr[L]['mask'] for L in lv8][::-1], f'{tau}it', store, data=data, eval_every=hp.training_steps)
log(f'Figure 8: levels {lv8}')
# Figure 5: each level's pruned networks trained from the rewind point (IMP's own level L+1 is Figure 2's run)
rec0 = imp(replicate(hp, 0), imps[tau], store, data=data, eval_every=hp.training_steps)
for L in reversed(P['theory_levels']):
    w_L, m_L = final_weights(rec0[L]['run']), rec0[L]['mask']
    cand = [('random', f, random_prune_fraction(m_L, f, seed=derive_seed('unmasking-fig5', hp.init_seed, L, f) % 2**31)) for f in P['random_ratios']]
    cand += [('magnitude', f, prune_to(w_L, m_L, nominal_density(L) * (1 - f))) for f in P['magnitude_ratios']]
    is_imp = [L + 1 < len(rec0) and m == rec0[L + 1]['mask'] for _, _, m in cand]
    todo = [m for (_, _, m), same in zip(cand, is_imp) if not same]
    train_rewound(hp, dense[0], todo[::-1], f'{tau}it', store, data=data, eval_every=hp.training_steps)
    log(f'Figure 5: level {L}, {len(todo)} pruned networks')
# Figure 4: the perturbed retrainings (the notebook's call: it also measures the barrier)
w_tau = dense[0].weights(tau)
for L in reversed(P['robust_levels']):
    R = weight_distances(mask_state(w_tau, rec0[L + 1]['mask']), mask_state(w_tau, rec0[L]['mask']))['l2']
    rb = robustness(rec0[L]['run'], tau, [R], eval_data={'test': eval_test}, alphas=P['alphas'], store=store, data=data,
                    precision=hp.precision, progress=False, reference=rec0[L]['run'])
    log(f'Figure 4: level {L}, R = {R:.4g}')
log('done')
