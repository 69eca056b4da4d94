"Invariants of ticketlab.lmc's barriers and interpolation; the `ticketlab lmc` command is tested in test_cli.py."
import numpy as np, pytest, torch
from hypothesis import given, settings, strategies as st
from torch import nn
from ticketlab.core import seed_all
from ticketlab.data import load_dataset
from ticketlab.masks import Mask, prune_to_density
from ticketlab.models import get_model
from ticketlab.store import Store
from ticketlab.runs import train_run, load_data, branch
from ticketlab.train import TrainHparams, Trainer
from ticketlab.evaluate import evaluate_states
from ticketlab.weights import lerp_state, combine_states, weight_distances
from ticketlab.lmc import (alpha_grid, barrier, barriers, midpoint_barrier, interpolation_curve, per_example_barriers,
                           final_weights, instability, instability_summary, lmc_scores, barrier_matrix,
                           plane_slice, nearest_in_triangle)
import pandas as pd
from conftest import trained

FAST = settings(max_examples=40, deadline=None)

@pytest.fixture(scope='module')
def digits(): return load_dataset('digits')


@pytest.fixture(scope='module')
def lenets(digits):
    "Two LeNet-300-100 solutions from one initialisation, trained on different data orders, and the template."
    train, test = digits
    seed_all(0); net = get_model('lenet_300_100', 10, train.shape, width=0.5)
    w0 = {k: v.clone() for k, v in net.state_dict().items()}
    ws = []
    for s in (1, 2):
        net.load_state_dict(w0); ws.append(trained(net, train, s))
    return net, ws[0], ws[1]


# --- barriers: pure functions of a curve ------------------------------------------------------------------------

curves = st.lists(st.floats(0, 1, allow_nan=False), min_size=3, max_size=21)

@FAST
@given(curves, st.sampled_from(['chord', 'ends mean']))
def test_barrier_nonnegative_and_symmetric(v, reference):
    a = np.linspace(0, 1, len(v))
    b = barrier(a, v, reference)
    assert b >= 0                                                  # the ends are on the grid
    assert barrier(1 - a, v, reference) == pytest.approx(b, abs=1e-12)   # the same path walked the other way

@FAST
@given(curves, st.floats(-1, 1), st.floats(-1, 1))
def test_linear_barrier_ignores_affine_trends(v, c, d):
    a = np.linspace(0, 1, len(v))
    assert barrier(a, np.asarray(v) + c + d * a) == pytest.approx(barrier(a, v), abs=1e-9)

@FAST
@given(st.integers(3, 31).filter(lambda n: n % 2), curves)
def test_midpoint_barrier_is_the_value_at_one_half(n, v):
    a = alpha_grid(n)
    v = np.resize(np.asarray(v), n)
    assert midpoint_barrier(a, v) == pytest.approx(v[n // 2] - (v[0] + v[-1]) / 2)
    assert barrier(a, v) >= midpoint_barrier(a, v) - 1e-12

# --- barriers between networks ----------------------------------------------------------------------------------

@pytest.mark.parametrize('which', ['lenet', 'resnet'])
@pytest.mark.parametrize('bn', ['interpolate', 'reestimate'])
def test_barrier_of_a_network_with_itself_is_zero(which, bn, lenets, small_resnet, digits):
    if which == 'lenet': net, w, _ = lenets; train, test = digits
    else: net, w, _, train, test = small_resnet
    b = barriers(interpolation_curve(w, w, net, {'test': test, 'train': train}, alphas=7, bn=bn, bn_data=train, device='cpu'))
    assert (b.filter(like='barrier').to_numpy() == 0).all()

@pytest.mark.parametrize('which', ['lenet', 'resnet'])
def test_barriers_are_symmetric(which, lenets, small_resnet, digits):
    if which == 'lenet': net, w1, w2 = lenets; _, test = digits
    else: net, w1, w2, _, test = small_resnet
    b12 = barriers(interpolation_curve(w1, w2, net, test, alphas=11, device='cpu'))
    b21 = barriers(interpolation_curve(w2, w1, net, test, alphas=11, device='cpu'))
    assert np.allclose(b12.filter(like='loss').to_numpy(), b21.filter(like='loss').to_numpy(), atol=1e-5)
    assert np.allclose(b12.filter(like='error').to_numpy(), b21.filter(like='error').to_numpy(), atol=1.5 / len(test))

@pytest.mark.parametrize('which', ['lenet', 'resnet'])
def test_mean_per_example_loss_barrier_is_the_midpoint_loss_barrier(which, lenets, small_resnet, digits):
    if which == 'lenet': net, w1, w2 = lenets; _, test = digits
    else: net, w1, w2, _, test = small_resnet
    pe = per_example_barriers(w1, w2, net, test, device='cpu')
    b = barriers(interpolation_curve(w1, w2, net, test, alphas=3, device='cpu'))
    assert pe.loss_barrier.mean() == pytest.approx(b.loss_barrier_mid.item(), abs=1e-6)
    assert pe.error_barrier.mean() == pytest.approx(b.error_barrier_mid.item(), abs=1e-6)
    assert len(pe) == len(test) and set(np.unique(pe.error_barrier)) <= {-1, -.5, 0, .5, 1}

def test_convex_model_has_no_loss_barrier(digits):
    "Logistic regression (one Linear layer) has a convex loss: the loss on the segment lies below the chord."
    train, test = digits
    sols = []
    for s in (0, 1):
        torch.manual_seed(s)
        net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        sols.append(trained(net, train, s, epochs=5, wd=0.0))
    w1, w2 = sols
    assert weight_distances(w1, w2)['l2'] > 0.5                    # two different solutions
    c = interpolation_curve(w1, w2, net, {'test': test, 'train': train}, alphas=21, device='cpu')
    for _, g in c.groupby('split'):
        a = g.alpha.to_numpy()
        assert (g.loss.to_numpy() - ((1 - a) * g.loss.iloc[0] + a * g.loss.iloc[-1]) <= 1e-5).all()
    assert (barriers(c).loss_barrier <= 1e-5).all()

def test_masked_children_keep_the_mask(tmp_path, digits):
    hp = TrainHparams(training_steps='2ep', batch_size=128, precision='fp32')
    parent = train_run(hp, Store(tmp_path), ['1ep'], data=digits, progress=False)
    m = prune_to_density({k: v for k, v in final_weights(parent).items() if k.endswith('weight')}, 0.3)
    kids = branch(parent, "1ep", 2, Store(tmp_path), mask=m, data=digits, progress=False)
    for k in kids:
        w = final_weights(k)
        for n in m: assert (w[n][~m[n]] == 0).all()
    c = instability(kids, get_model('lenet_300_100', 10, digits[0].shape), digits[1], alphas=5, device='cpu')
    assert len(c) == 5 and c.pair.unique().tolist() == ['0-1']

def test_instability_summary_threshold_and_stability():
    b = pd.DataFrame(dict(rewind_step=[0, 0, 5, 5], split='test', pair=['0-1', '0-2'] * 2, error_barrier=[0.05, 0.03, 0.019, 0.021]))
    s = instability_summary(b)
    assert s.instability.tolist() == pytest.approx([0.04, 0.02]) and s.pairs.tolist() == [2, 2]
    assert s.stable.tolist() == [False, False]                          # 0.02 is not below the 2 % threshold
    assert instability_summary(b, threshold=0.021).stable.tolist() == [False, True]
    assert instability_summary(b, threshold=0.05).stable.tolist() == [True, True]
    with pytest.raises(ValueError, match='choose one of error_barrier'): instability_summary(b, metric='loss_gap')

def test_lmc_scores_are_the_mean_per_example_barriers(lenets, digits):
    "Def. C.1 of the data-diet paper: the per-example barrier at the midpoint, averaged over the K pairs."
    net, w1, w2 = lenets
    _, test = digits
    w3 = lerp_state(w1, w2, 0.3)
    sc = lmc_scores([(w1, w2), (w1, w3)], net, test, device='cpu')
    by_hand = []
    for a, b in ((w1, w2), (w1, w3)):
        r = evaluate_states(net, [a, b, lerp_state(a, b, 0.5)], test, per_example=True, device='cpu')
        by_hand.append(r[2]['losses'].double().numpy() - 0.5 * (r[0]['losses'].double().numpy() + r[1]['losses'].double().numpy()))
    assert np.allclose(sc.loss_score.to_numpy(), np.mean(by_hand, axis=0), atol=1e-6)
    assert sc.instances.unique().tolist() == [2] and len(sc) == len(test)
    assert set(np.unique(sc.error_score)) <= {-1, -.75, -.5, -.25, 0, .25, .5, .75, 1}

def test_barrier_matrix_max_is_the_largest_error_on_the_path(lenets, digits):
    net, w1, w2 = lenets
    _, test = digits
    ws = [w1, lerp_state(w1, w2, 0.5), w2]
    Mx = barrier_matrix(ws, net, test, alphas=5, quantity='max', device='cpu')
    c = interpolation_curve(w1, w2, net, test, alphas=5, device='cpu')
    assert Mx.iat[0, 2] == pytest.approx(c.error.max()) and Mx.iat[0, 0] == pytest.approx(c.error.iloc[0])

def test_plane_slice_extrapolates_only_prunable_weights(small_resnet):
    "Unmasking App. B: outside the triangle only prunable weights extrapolate; BN and biases come from the nearest point."
    net, w1, w2, _, test = small_resnet
    w3 = lerp_state(w1, w2, 0.5)
    w3 = {k: (v + 0.05 * torch.randn_like(v) if v.is_floating_point() else v) for k, v in w3.items()}
    seen = []
    import ticketlab.lmc as L
    real = L.evaluate_states
    def spy(model, states, data, **kw):
        states = list(states); seen.extend(states); return real(model, states, data, **kw)
    L.evaluate_states = spy
    try: sl = plane_slice(w1, w2, w3, net, test, resolution=5, margin=0.5)
    finally: L.evaluate_states = real
    prun = {n for n, _ in net.named_parameters() if n.endswith('weight') and _.ndim > 1}
    pts = np.array(list(sl.attrs['points'].values()))
    for (_, r), st_ in zip(sl.iterrows(), seen):
        c = np.array([1 - r.a - r.b, r.a, r.b])
        near = nearest_in_triangle(pts, c @ pts)
        assert all((st_[k] >= 0).all() for k in st_ if k.endswith('running_var'))
        ref_near, ref_raw = combine_states([w1, w2, w3], near), combine_states([w1, w2, w3], c)
        for k, v in st_.items():
            if not v.is_floating_point(): continue
            want = ref_raw[k] if k in prun else ref_near[k]
            if k.endswith('running_var') and k in prun: continue
            assert torch.allclose(v, want, atol=1e-5), (k, c)
    outside = [(1 - a - b, a, b) for a, b in zip(sl.a, sl.b) if min(1 - a - b, a, b) < -1e-9]
    assert outside                                                    # the margin does reach outside the triangle

def test_robustness_against_the_imp_level_itself(tmp_path, digits):
    "Unmasking Fig. 4: with reference= the IMP level, a perturbation of norm 0 retrains the level exactly (barrier 0); a large one moves it."
    from ticketlab.imp import imp, ImpHparams
    from ticketlab.lmc import robustness
    hp = TrainHparams(training_steps='2ep', width=0.5, precision='fp32')
    store = Store(tmp_path)
    recs = imp(hp, ImpHparams(levels=1, rewind_step='5it'), store, data=digits)
    lvl = recs[1]['run']
    rob = robustness(lvl, 5, [0.0, 50.0], eval_data={'test': digits[1]}, store=store, data=digits, progress=False, reference=lvl)
    assert rob.query('norm == 0').error_barrier.item() == 0 and rob.query('norm == 0').loss_barrier.item() == 0
    assert rob.query('norm == 50').loss_barrier.item() > 0
    assert len(store.find('branch')) == 2          # one perturbed child per norm, no unperturbed child
    with pytest.raises(ValueError, match='reference must be a Run'):
        robustness(lvl, 5, [1.0], store=store, data=digits, progress=False, reference=recs[0]['run'].hparams.replace(lr=1.0))
