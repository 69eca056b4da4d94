"IMP invariants: densities, nested masks, exact zeros in every checkpoint, rewinding, baselines, identity, determinism (the `ticketlab imp` command: test_cli.py)."
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch
from ticketlab.core import Step
from ticketlab.masks import Mask, random_prune_fraction
from ticketlab.train import TrainHparams, lr_schedule
from ticketlab.store import Store
from ticketlab.runs import load_data
from ticketlab.imp import *
from ticketlab.weights import mask_state

@pytest.fixture(autouse=True, scope='module')
def one_thread():
    "Tiny models on a shared 2-core machine: one intra-op thread avoids OpenMP threads spinning against other jobs (10x faster here)."
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

HP = TrainHparams(training_steps='2ep', width=0.5, precision='fp32')   # digits, LeNet-150-50, 22 it/epoch: T = 44
T, K = 44, 5

@pytest.fixture(scope='module')
def data(): return load_data(HP)

@pytest.fixture(scope='module')
def wr(tmp_path_factory, data):
    "IMP-WR rewinding to step 5, 3 levels of 20%, with both baselines on every level."
    store = Store(tmp_path_factory.mktemp('wr'))
    recs = imp(HP, ImpHparams(levels=3, rewind_step=f'{K}it'), store, data=data)
    base = {b: [baseline(b, HP, r, recs[0]['run'], f'{K}it', store, data=data) for r in recs[1:]] for b in BASELINES}
    return store, recs, base

def _all_checkpoints_zero(run, mask):
    for s in run.checkpoint_steps():
        w = run.weights(s)
        for n, m in mask.items(): assert (w[n][~m] == 0).all(), (run, s, n)

def test_density_is_0_8_to_the_level(wr):
    _, recs, _ = wr
    for r in recs:
        m = r['mask']
        assert abs(m.num_kept - 0.8**r['level'] * m.num_total) <= 1
        assert r['density'] == pytest.approx(0.8**r['level'], abs=1 / m.num_total)

def test_layerwise_density_per_layer(tmp_path, data):
    recs = imp(HP, ImpHparams(levels=3, layerwise=True), Store(tmp_path), data=data)
    for r in recs[1:]:
        for n, m in r['mask'].items(): assert abs(int(m.sum()) - 0.8**r['level'] * m.numel()) <= 1, n

def test_masks_nested(wr):
    _, recs, _ = wr
    for a, b in zip(recs, recs[1:]): assert b['mask'] <= a['mask'] and b['mask'].num_kept < a['mask'].num_kept

def test_pruned_weights_exactly_zero_in_every_checkpoint(wr):
    _, recs, base = wr
    for r in recs[1:]: _all_checkpoints_zero(r['run'], r['mask'])
    for rs in base.values():
        for r in rs: _all_checkpoints_zero(r['run'], r['mask'])

def test_level_mask_is_stored(wr):
    _, recs, _ = wr
    for r in recs[1:]: assert r['run'].mask() == r['mask']

def test_rewound_weights_equal_rewind_checkpoint_on_mask(wr):
    _, recs, _ = wr
    W_k = recs[0]['run'].weights(K)
    for r in recs[1:]:
        start = r['run'].weights(K)
        for n, v in W_k.items():
            expect = v * r['mask'][n] if n in r['mask'] else v
            assert torch.equal(start[n], expect), n

def test_dense_run_shared_and_keeps_rewind_point(wr):
    store, recs, _ = wr
    assert len(store.runs('train')) == 1
    assert recs[0]['run'].checkpoint_steps() == [K, T]

def test_random_pruning_keeps_layerwise_densities(wr):
    _, recs, base = wr
    for imp_rec, rp in zip(recs[1:], base['random_pruning']):
        assert imp_rec['mask'].report().kept.tolist() == rp['mask'].report().kept.tolist()
        assert rp['mask'] != imp_rec['mask']
        W_k = recs[0]['run'].weights(K)
        for n, v in mask_state(W_k, rp['mask']).items(): assert torch.equal(rp['run'].weights(K)[n], v)

def test_reinit_same_mask_fresh_seeded_init(wr, data):
    _, recs, base = wr
    for imp_rec, ri in zip(recs[1:], base['reinit']):
        assert ri['mask'] == imp_rec['mask']
        w0, dense0 = ri['run'].weights(0), recs[0]['run'].weights(K)
        assert not torch.equal(w0['fc1.weight'], dense0['fc1.weight'] * imp_rec['mask']['fc1.weight'])
    # the fresh init is seeded: the same for every level of a replicate, on its mask
    a, b = base['reinit'][0]['run'].weights(0), base['reinit'][1]['run'].weights(0)
    m = recs[2]['mask']['fc1.weight']
    assert torch.equal(a['fc1.weight'] * m, b['fc1.weight'])

def test_levels_and_replicate_not_in_identity(tmp_path, data):
    st = Store(tmp_path)
    one = imp(HP, ImpHparams(levels=1), st, data=data)
    two = imp(HP, ImpHparams(levels=2), st, data=data)
    assert one[1]['run'].path == two[1]['run'].path and len(st.runs('imp_level')) == 2
    # replicate 1 is hp with both seeds shifted by one, nothing else
    df = imp_experiment(HP, ImpHparams(levels=1), replicates=2, store=st, data=data)
    shifted = imp(HP.replace(init_seed=1, data_seed=1), ImpHparams(levels=1), st, data=data)
    assert df[(df.replicate == 1) & (df.level == 1)].run.item() == shifted[1]['run'].name

def test_imp_hparams_hash_pinned():
    assert ImpHparams().hash == ImpHparams(levels=3).hash
    assert ImpHparams().nondefault() == {}
    assert ImpHparams(rewind_step='500it').hash != ImpHparams().hash
    # pinned: renaming these would orphan stored results
    assert ImpHparams().hash == '44136fa355b3678a'                     # sha256 of '{}'
    assert ImpHparams(strategy='lrr', rewind_step='500it', fraction=0.5).hash == '710c6a38cf19dff5'

def test_same_seeds_same_table(tmp_path, data):
    kw = dict(replicates=2, baselines=BASELINES, data=data)
    a = imp_experiment(HP, ImpHparams(levels=2, rewind_step='1ep'), store=Store(tmp_path/'a'), **kw)
    b = imp_experiment(HP, ImpHparams(levels=2, rewind_step='1ep'), store=Store(tmp_path/'b'), **kw)
    pd.testing.assert_frame_equal(a, b)
    assert list(a.columns) == IMP_COLUMNS and len(a) == 2 * (3 + 2 + 2)
    assert set(a.strategy) == {'wr', 'reinit', 'random_pruning'}

def test_lrr_and_ft_start_from_previous_solution(tmp_path, data):
    "Unmasking §2: LRR = A_0(m ⊙ w^(L-1), T) (steps 0 -> T), FT = A_T(m ⊙ w^(L-1), T) (steps T -> 2T)."
    st, hp = Store(tmp_path), HP.replace(schedule='multistep', milestones='1ep')
    lrr = imp(hp, ImpHparams(strategy='lrr', levels=2), st, data=data)
    ft = imp(hp, ImpHparams(strategy='ft', levels=2), st, data=data)
    for recs, start in ((lrr, 0), (ft, T)):
        for prev, cur in zip(recs[1:], recs[2:]):
            assert cur['run'].checkpoint_steps() == [start, start + T]
            final = prev['run'].weights(prev['run'].checkpoint_steps()[-1])
            for n, v in mask_state(final, cur['mask']).items(): assert torch.equal(cur['run'].weights(start)[n], v)
    assert ft[1]['run'].hparams.weight_decay == 0 and lrr[1]['run'].hparams.weight_decay == HP.weight_decay
    assert ft[1]['run'].key['previous'] == ft[0]['run'].ref and ft[1]['run'].path != lrr[1]['run'].path
    # Renda et al.'s span is an option: from the rewind step to T, and a different run
    renda = imp(hp, ImpHparams(strategy='lrr', levels=1, rewind_step=f'{K}it', retrain='from_rewind_step'), st, data=data)
    assert renda[1]['run'].checkpoint_steps() == [K, T]

def test_ft_trains_at_the_final_learning_rate(tmp_path, data):
    hp = HP.replace(schedule='multistep', milestones='1ep')
    final = lr_schedule(hp, 22)(T - 1)
    assert final == pytest.approx(hp.lr * hp.gamma) and ft_learning_rate(hp, ImpHparams(strategy='ft'), 22) == final
    st = Store(tmp_path)
    recs = imp(hp, ImpHparams(strategy='ft', levels=1), st, data=data)
    start, end = T, 2 * T
    w0, w1 = recs[1]['run'].weights(start), recs[1]['run'].weights(end)
    assert max((w1[n] - w0[n]).abs().max().item() for n in recs[1]['mask']) > 1e-3     # it trains: not a no-op
    # replaying the level from T to 2T at the constant final LR, without weight decay, reproduces it exactly
    from ticketlab.train import Trainer
    from ticketlab.runs import build_model
    hq = hp.replace(training_steps=f'{end}it', weight_decay=0.0)
    tr = Trainer(build_model(hq, data[0]), hq, data[0], mask=recs[1]['mask'], lr_fn=lambda t: final)
    tr.model.load_state_dict(w0); tr.fit(start, end)
    for n, v in w1.items(): assert torch.equal(tr.model.state_dict()[n], v), n

def test_ft_needs_a_learning_rate_under_cosine(tmp_path, data):
    with pytest.raises(ValueError, match='give ft_lr'): imp(HP, ImpHparams(strategy='ft', levels=1), Store(tmp_path), data=data)
    assert not (tmp_path/'imp_level').exists()
    recs = imp(HP, ImpHparams(strategy='ft', levels=1, ft_lr=0.01), Store(tmp_path), data=data)
    w0, w1 = recs[1]['run'].weights(T), recs[1]['run'].weights(2 * T)
    assert max((w1[n] - w0[n]).abs().max().item() for n in recs[1]['mask']) > 1e-3

def test_one_shot_and_varying_fractions(tmp_path, data):
    st = Store(tmp_path)
    recs = imp(HP, one_shot(0.1), st, data=data)
    assert len(recs) == 2 and abs(recs[1]['mask'].num_kept - 0.1 * recs[1]['mask'].num_total) <= 1
    recs = imp(HP, ImpHparams(fractions='0.5,0.3', levels=3), st, data=data)
    for r, d in zip(recs[1:], (0.5, 0.35, 0.245)): assert abs(r['mask'].num_kept - d * r['mask'].num_total) <= 1

def test_layers_to_ignore_stay_dense_and_count_as_kept(tmp_path, data):
    recs = imp(HP, ImpHparams(levels=2, layers_to_ignore='fc3.weight'), Store(tmp_path), data=data)
    m = recs[-1]['mask']
    assert m['fc3.weight'].all() and recs[-1]['density'] == m.num_kept / m.num_total
    w = recs[-1]['run'].weights(T)
    assert (w['fc3.weight'] != 0).all()
    pruned = m.num_total - m['fc3.weight'].numel()
    kept = m.num_kept - m['fc3.weight'].numel()
    assert abs(kept - 0.64 * pruned) <= 1                               # the fraction is of the layers IMP prunes
    # by default every conv and linear weight is pruned, the output layer included (the papers prune globally)
    full = imp(HP, ImpHparams(levels=1), Store(tmp_path), data=data)[-1]['mask']
    assert not full['fc3.weight'].all()

def test_adaptive(tmp_path, data):
    recs = imp(HP.replace(training_steps='3ep'), ImpHparams(levels=2, adaptive=True), Store(tmp_path), data=data)
    assert recs[0]['epsilon'] > 0 and recs[0]['threshold'] > recs[0]['epsilon']
    assert len({r['threshold'] for r in recs}) == 1                     # fixed: the dense loss + ε, at every level
    d = 1.0
    for r in recs[1:]:
        assert round(r['fraction'], 10) in {round(0.1 * i, 10) for i in range(2, 10)}
        d *= 1 - r['fraction']
        assert abs(r['mask'].num_kept - d * r['mask'].num_total) <= 1

def test_adaptive_epsilon_is_the_std_and_threshold_the_dense_loss(tmp_path, data, monkeypatch):
    "App. F step 1, against a hand computation: ε = std of the last epoch's minibatch losses; θ = dense train loss + ε."
    import ticketlab.imp as I
    losses = [0.5, 0.7, 0.4, 0.9]
    monkeypatch.setattr(I, 'train_loss_spread', lambda *a, **k: float(np.std(losses)))
    monkeypatch.setattr(I, 'dense_train_loss', lambda *a, **k: 0.25)
    seen = []
    monkeypatch.setattr(I, 'adaptive_fraction', lambda sol, m, d, thr, *a, **k: seen.append(thr) or 0.5)
    recs = I.imp(HP.replace(training_steps='3ep'), ImpHparams(levels=3, adaptive=True), Store(tmp_path), data=data)
    eps = np.sqrt(np.mean((np.array(losses) - 0.625) ** 2))              # = 0.192: the std, not the range 0.5
    assert recs[0]['epsilon'] == pytest.approx(eps) and seen == [pytest.approx(0.25 + eps)] * 3
    assert [r['fraction'] for r in recs[1:]] == [0.5, 0.5, 0.5]

def test_bad_input():
    with pytest.raises(ValueError, match='choose one of wr, lrr, ft'): ImpHparams(strategy='x')
    with pytest.raises(ValueError, match='adaptive heuristic chooses'): ImpHparams(adaptive=True, fractions='0.5')
    with pytest.raises(ValueError, match='must come before the end'): check_imp(HP, ImpHparams(rewind_step='44it'), load_data(HP)[0])
    with pytest.raises(ValueError, match='choose from reinit, random_pruning'): imp_experiment(HP, ImpHparams(), baselines=['x'])

def test_matching_and_most_extreme():
    assert matching([0.90], [0.91, 0.93]) is False and matching([0.906], [0.91, 0.93]) is True
    df = pd.DataFrame(dict(replicate=[0, 1] * 4, strategy=['wr'] * 8, rewind_step=0, level=[0, 0, 1, 1, 2, 2, 3, 3],
                           density=[1, 1, .8, .8, .64, .64, .512, .512], test_accuracy=[.9, .92, .91, .92, .85, .86, .905, .90],
                           run=list('abcdefgh')))
    s = imp_summary(df)
    assert s.matching.tolist() == [True, True, False, True]
    ext = most_extreme_matching(df)
    assert ext.level.item() == 3 and ext.density.item() == pytest.approx(0.512)

def test_train_rewound_is_imp_wr_on_any_mask(wr, data):
    "A mask trained from the rewind point: IMP-WR's own level mask gives IMP-WR's level back, bit for bit; others are nested, zero and stored once."
    store, recs, _ = wr
    last = lambda run: run.weights(run.checkpoint_steps()[-1])
    m_rand = random_prune_fraction(recs[1]['mask'], 0.5, seed=3)
    again, rnd = train_rewound(HP, recs[0]['run'], [recs[2]['mask'], m_rand], f'{K}it', store, data=data)
    for n, v in last(recs[2]['run']).items(): assert torch.equal(last(again)[n], v), n
    assert rnd.mask() == m_rand and rnd.checkpoint_steps() == [K, T]
    for s in rnd.checkpoint_steps(): assert all((rnd.weights(s)[n][~m_rand[n]] == 0).all() for n in m_rand)
    for n, v in mask_state(recs[0]['run'].weights(K), m_rand).items(): assert torch.equal(rnd.weights(K)[n], v)
    assert train_rewound(HP, recs[0]['run'], [m_rand], f'{K}it', store, data=data)[0].path == rnd.path

def test_normalized_magnitudes_cdf_and_quantile(wr):
    _, recs, _ = wr
    last = lambda run: run.weights(run.checkpoint_steps()[-1])
    w, m = last(recs[2]['run']), recs[2]['mask']
    a = normalized_magnitudes(w, m)
    assert len(a) == m.num_kept and np.isclose(a.mean(), 1.0) and (np.diff(a) >= 0).all()
    cdf = magnitude_cdf(w, m)
    assert (np.diff(cdf.cdf) >= 0).all() and cdf.cdf.iloc[-1] <= 1 and cdf.cdf.iloc[0] == 0
    q = magnitude_quantile(w, m, 0.2)
    assert abs(np.mean(a <= q) - 0.2) < 2 / len(a)
    proj = mask_state(last(recs[1]['run']), m)                 # the projection over the previous mask: the pruned 20% are zeros
    b = normalized_magnitudes(proj, recs[1]['mask'])
    assert np.isclose(np.mean(b == 0), 1 - m.num_kept / recs[1]['mask'].num_kept) and np.isclose(b[b > 0].mean(), 1.0)
    assert magnitude_quantile(proj, recs[1]['mask'], 0.1) == 0.0

def test_ft_learning_rate_is_part_of_the_level_identity(tmp_path, data):
    "Fine-tuning at two given rates gives two runs (the rate reaches the trainer as lr_fn, which no hparam hashes); the default rate keeps the old key."
    st = Store(tmp_path)
    a = imp(HP, ImpHparams(strategy='ft', levels=1, ft_lr=0.01), st, data=data)[1]['run']
    b = imp(HP, ImpHparams(strategy='ft', levels=1, ft_lr=0.5), st, data=data)[1]['run']
    assert a.path != b.path and a.key['ft_lr'] == 0.01 and b.key['ft_lr'] == 0.5
    assert not torch.equal(a.weights(2 * T)['fc1.weight'], b.weights(2 * T)['fc1.weight'])
    hm = HP.replace(schedule='multistep', milestones='1ep')
    assert 'ft_lr' not in imp(hm, ImpHparams(strategy='ft', levels=1), st, data=data)[1]['run'].key
