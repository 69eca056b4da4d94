"""A second worker for the `cpu` runs of papers/lmc.ipynb and papers/early_phase.ipynb on a 2-core machine.

The notebooks train their runs one after another on one core. This script, started beside a notebook with the same
TICKETLAB_HOME, trains on the other core the same runs (the same specs, so the same store entries) in the opposite
order: replicate 1 of IMP and its controls, the instability children from the last to the first, then early_phase's
replicate-1 rewinding to 40 iterations. Each run is trained once: a process that asks for a run the other is training
waits on the run's lock and then reuses it (`ticketlab.runs`). The numbers in the notebooks are the same as if the
notebook had trained everything itself; only the wall time differs.

    TICKETLAB_HOME=<store> OMP_NUM_THREADS=1 python papers/results/cpu_worker.py   # from the repository root
"""
import json, sys, time
import numpy as np
from ticketlab.data import find_cifar10_jpeg, load_dataset, class_balanced_subset
from ticketlab.train import TrainHparams
from ticketlab.store import Store
from ticketlab.runs import dense_run, branch, replicate, build_model, plan
from ticketlab.imp import ImpHparams, imp, baseline, dense_mask, prune_to
from ticketlab.lmc import final_weights

# the cpu presets of both notebooks (papers/lmc.ipynb cells 2 and 13, papers/early_phase.ipynb cell 2)
root = find_cifar10_jpeg()
train, test = load_dataset('cifar10', root=root)
train = class_balanced_subset(train, 500, seed=0)
data = (train, test)
hp = TrainHparams(dataset='cifar10', data_root=str(root), model='resnet20', width=0.5, batch_size=128, lr=0.1, momentum=0.9,
                  weight_decay=1e-4, schedule='multistep', milestones='15ep,22ep', warmup='0it', training_steps='30ep',
                  augment=False, precision='auto')
l_hp = TrainHparams(dataset='cifar10', data_root=str(root), model='resnet20', width=0.5, batch_size=128, lr=0.1,
                    schedule='multistep', milestones='15ep,22ep', training_steps='30ep', augment=False, precision='auto')
assert hp == l_hp, 'the two notebooks share their dense runs only if their hyperparameters are equal'
store, kw = Store(), dict(data=data, eval_every=hp.training_steps)
t0 = time.time()
def log(msg): print(f'[{time.time() - t0:6.0f} s] {msg}', flush=True)

# 1. lmc App. A, replicate 1: IMP (k = 0) to level 6 and the controls on levels 4 and 6
ihp = ImpHparams(strategy='wr', rewind_step='0it', fraction=0.5, levels=6, layers_to_ignore='')
hp1 = replicate(hp, 1)
recs = imp(hp1, ihp, store, **kw)
log('replicate 1: IMP levels 0-6')
for b in ('reinit', 'random_pruning'):
    for rec in recs[1:]:
        if rec['level'] in (4, 6): baseline(b, hp1, rec, recs[0]['run'], '0it' if b == 'reinit' else ihp.rewind_step, store, **kw)
log('replicate 1: controls on levels 4 and 6')

# 2. lmc instability: the children of replicate 0 at every k, last first (the notebook goes first to last)
p = plan(hp, train)
ks = [p.it(s) for s in ['0it', '10it', '40it', '117it', '390it']]
parent = dense_run(hp, ks, store, data=data, progress=False)
mask = prune_to(final_weights(parent), dense_mask(build_model(hp, train), []), 0.2)
for setting in ('sparse', 'dense'):
    for k in reversed(ks):
        branch(parent, k, 2, store, hp=hp, mask=None if setting == 'dense' else mask, data=data, progress=False)
        log(f'children: {setting} k={k}')

# 3. early_phase: replicate 1 of IMP rewinding to 40 iterations, levels 1-4
imp(hp1, ImpHparams(strategy='wr', rewind_step='40it', fraction=0.5, levels=4, layers_to_ignore=''), store, **kw)
log('early_phase: replicate 1, k = 40it')
