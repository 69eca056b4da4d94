"""Before/after of the adaptive pruning ratio (issue 7, item 1; unmasking.txt App. F) on the digits example.

before: eps = range (max - min) of the dense run's last-epoch minibatch losses; threshold = the *current* level's
        full-batch training loss + eps (re-computed at every level).
after:  eps = standard deviation of those losses; threshold = the *dense* network's full-batch training loss + eps,
        fixed for every level (what `ticketlab.imp.imp(..., ImpHparams(adaptive=True))` does now).
Both rules start from the same dense run and prune with the same `adaptive_fraction` sweep (floor 0.2).
Run from the repository root: `python papers/results/adaptive-digits/compare_rules.py`; writes fractions.csv beside it.
"""
import tempfile, sys
from pathlib import Path
import numpy as np, pandas as pd
from ticketlab.train import TrainHparams, Trainer
from ticketlab.store import Store
from ticketlab.runs import RunSpec, train_runs, dense_run, plan, load_data, build_model
from ticketlab.weights import mask_state
from ticketlab.imp import ImpHparams, imp, dense_mask, prune_to, adaptive_fraction, dense_train_loss, _LossLog, path_train_losses

HP = TrainHparams(training_steps='3ep', precision='fp32')       # LeNet-300-100 on the digits (the defaults)
LEVELS = 6

def last_epoch_losses(dense, data):
    p = plan(HP, data[0])
    log = _LossLog()
    tr = Trainer(build_model(HP, data[0]), HP, data[0], callbacks=[log])
    tr.load_state(dense.load_checkpoint(p.T - p.iterations_per_epoch)); tr.fit(p.T - p.iterations_per_epoch, p.T)
    return np.array(log.losses)

def before(store, data):
    "The old rule, level by level (WR to k = 0, as `imp` does with the default ImpHparams)."
    train = data[0]
    p = plan(HP, train)
    dense = dense_run(HP, [0, p.T - p.iterations_per_epoch], store, data=data, progress=False)
    losses = last_epoch_losses(dense, data)
    eps = float(losses.max() - losses.min())
    mask, density, prev, rows = dense_mask(build_model(HP, train)), 1.0, dense, []
    model = build_model(HP, train)
    for level in range(1, LEVELS + 1):
        sol = prev.weights(prev.checkpoint_steps()[-1])
        cur = path_train_losses(model, sol, sol, train, [0.0])[0]
        f = max(adaptive_fraction(sol, mask, density, cur + eps, HP, train), 0.2)
        density *= 1 - f
        mask = prune_to(sol, mask, density)
        prev, = train_runs([RunSpec(HP, 'imp_level', dict(parent=dense.ref, rule='before', level=level, mask=mask.hash), data=data,
                                    init=mask_state(dense.weights(0), mask), mask=mask)], store, progress=False)
        rows.append(dict(rule='before', level=level, epsilon=eps, threshold=cur + eps, fraction=f, density=mask.density,
                         test_accuracy=prev.summary()['test_accuracy']))
    return rows

def after(store, data):
    recs = imp(HP, ImpHparams(levels=LEVELS, adaptive=True), store, data=data)
    return [dict(rule='after', level=r['level'], epsilon=r['epsilon'], threshold=r['threshold'], fraction=r['fraction'],
                 density=r['density'], test_accuracy=r['run'].summary()['test_accuracy']) for r in recs[1:]]

if __name__ == '__main__':
    with tempfile.TemporaryDirectory() as d:
        store, data = Store(d), load_data(HP)
        df = pd.DataFrame(before(store, data) + after(store, data))
    out = Path(__file__).with_name('fractions.csv')
    df.to_csv(out, index=False)
    print(df.pivot_table(index='level', columns='rule', values=['fraction', 'density', 'threshold']).round(4).to_string())
    print(f'wrote {out}')
