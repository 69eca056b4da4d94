"The data-diet paper's loss-landscape view (ticketlab.diet_landscape): per-example barriers, correlations, LMC scores; tiny runs on digits."
import numpy as np, pandas as pd, pytest
from scipy import stats
from ticketlab.data import load_dataset
from ticketlab.store import Store
from ticketlab.train import TrainHparams
from ticketlab.runs import dense_run, build_model
from ticketlab.lmc import per_example_barriers
from ticketlab.el2n import select_by_score, Scores
from ticketlab.datadiet import DataDietHparams, DIET_COLUMNS
from ticketlab.diet_landscape import (diet_barriers, spawn_barriers, barrier_correlations, lmc_example_scores, BARRIER_COLUMNS)

HP = TrainHparams(dataset='digits', training_steps='1ep', batch_size=64, precision='fp32')   # T = 22 iterations

@pytest.fixture(scope='module')
def digits(): return load_dataset('digits')

def test_spawn_barriers_average_the_pairs_of_children(tmp_path, digits):
    "App. A: 'we train three children and calculate the train loss barrier between each pair and average'."
    st = Store(tmp_path)
    d = dense_run(HP, [5], st, data=digits, progress=False)
    b = spawn_barriers(d, 5, 3, st, data=digits)
    kids = st.find('branch', parent=d, step=5)
    assert len(kids) == 3 and set(b.pairs) == {3} and len(b) == len(digits[0])
    ws = [k.weights(22) for k in kids]
    net = build_model(HP, digits[0])
    by_hand = np.mean([per_example_barriers(ws[i], ws[j], net, digits[0]).loss_barrier for i, j in ((0, 1), (0, 2), (1, 2))], 0)
    np.testing.assert_allclose(b.loss_barrier, by_hand, atol=1e-12)

def test_diet_barriers_table_and_lmc_scores(tmp_path, digits):
    st = Store(tmp_path)
    bx = diet_barriers(HP, DataDietHparams(subsets='random', sizes='128', steps='5it', references='0it'), n=2, store=st, data=digits)
    assert list(bx.columns) == BARRIER_COLUMNS and len(bx) == 2 * len(digits[0]) and set(bx.pairs) == {1}
    assert sorted(set(zip(bx.subset, bx.rewind_step))) == [('all', 0), ('random', 5)]
    lmc = lmc_example_scores(HP, 5, n=2, replicates=1, store=st, data=digits)
    assert isinstance(lmc, Scores) and lmc.meta['kind'] == 'lmc' and lmc.meta['instances'] == 1
    idx = select_by_score(lmc, digits[0].y, 100, 'easiest')                      # Figure 10: the smallest LMC scores
    assert lmc.values[idx].max() <= np.sort(lmc.values)[99]

def test_barrier_correlations_are_pearson_per_condition_and_replicate():
    rng = np.random.default_rng(0)
    conds = [('random', 128, 5), ('easiest', 128, 5), ('all', 1437, 0), ('all', 1437, 10)]
    diet, bx = [], []
    for c, (w, m, k) in enumerate(conds):
        for r in range(2):
            for lvl in (0, 1):
                diet.append(dict(subset=w, size=m, rewind_step=k, noise=0.0, replicate=r, level=lvl, density=0.5**lvl,
                                 test_accuracy=0.9 - 0.01 * c - 0.001 * r, train_accuracy=1, test_loss=0, train_loss=0, run='x'))
            for e in range(5):
                bx.append(dict(subset=w, size=m, rewind_step=k, noise=0.0, replicate=r, example=e, label=0, loss_barrier=0.1 * c + rng.normal(0, 0.01),
                               error_barrier=0, pairs=3, pretrain_accuracy=rng.uniform()))
    diet, bx = pd.DataFrame(diet, columns=DIET_COLUMNS), pd.DataFrame(bx, columns=BARRIER_COLUMNS)
    t, corr = barrier_correlations(diet, bx, level=1)
    assert len(t) == 8
    r, p = stats.pearsonr(t.mean_barrier, t.final_accuracy)
    got = corr.set_index('x').loc['mean_barrier']
    assert got.r == pytest.approx(r) and got.p == pytest.approx(p) and got.r < -0.9 and got.n == 8
    with pytest.raises(ValueError, match='level 3 is not in diet'): barrier_correlations(diet, bx, level=3)
