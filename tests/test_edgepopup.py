"Tests of ticketlab.edgepopup: exact top-k counts, straight-through gradients, frozen weights, inits, Bernoulli masks, tickets."
import math, re, warnings
import numpy as np
import pytest, torch
import torch.nn.functional as F
from torch import nn
from hypothesis import given, settings, strategies as st
from ticketlab.edgepopup import (PAPER_WDS, BernoulliSample, GetSubnet, SupermaskConv2d, SupermaskHparams, SupermaskLinear,
                                 init_random_weights_, kept_count, lottery_check, supermask_model, supermask_train_hparams,
                                 to_ticket, topk_mask)
from ticketlab.data import load_dataset
from ticketlab.models import get_model, prunable_parameters
from ticketlab.train import Trainer, TrainHparams

FAST = settings(max_examples=60, deadline=None)

def algorithm1_mask(scores, k):
    "Algorithm 1's GetSubnet (sort ascending, zero the first j) with a stable sort and the exact count ceil(k*n)."
    flat = scores.flatten()
    j = flat.numel() - kept_count(flat.numel(), k)
    out = torch.ones(flat.numel(), dtype=torch.bool)
    out[flat.sort(stable=True).indices[:j]] = False
    return out.reshape(scores.shape)

@pytest.fixture(scope='module')
def digits(): return load_dataset('digits')

# --- the top-k count -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('n,k,kept', [(10, 0.1, 1), (10, 0.25, 3), (10, 0.3, 3), (10, 0.7, 7), (10, 0.9, 9), (10, 1.0, 10),
                                      (7, 0.5, 4), (1, 0.01, 1), (2261184, 0.5, 1130592), (1000, 0.3, 300)])
def test_kept_count_is_ceil_k_n(n, k, kept):
    assert kept_count(n, k) == kept

@pytest.mark.parametrize('k', [0, -0.1, 1.5, float('nan')])
def test_kept_count_rejects_bad_density(k):
    with pytest.raises(ValueError, match=r'\(0, 1\]'): kept_count(10, k)

@pytest.mark.parametrize('shape', [(10,), (4, 3, 3, 3), (7, 5)])
@pytest.mark.parametrize('k', [0.1, 0.3, 0.5, 0.9])
def test_all_equal_scores_keep_exact_count(shape, k):
    m = topk_mask(torch.full(shape, 0.7), k)
    n = math.prod(shape)
    assert m.shape == shape and int(m.sum()) == kept_count(n, k)
    assert m.reshape(-1)[n - kept_count(n, k):].all()   # ties: the later indices are kept, deterministically

@FAST
@given(st.lists(st.integers(1, 7), min_size=1, max_size=3), st.floats(0.01, 1.0), st.integers(0, 2**31 - 1), st.booleans())
def test_topk_mask_matches_stable_sort(shape, k, seed, ties):
    g = torch.Generator().manual_seed(seed)
    s = torch.randint(0, 3, shape, generator=g).float() if ties else torch.rand(shape, generator=g)
    m = topk_mask(s, k)
    assert torch.equal(m, algorithm1_mask(s, k))
    assert int(m.sum()) == kept_count(s.numel(), k)
    if m.any() and (~m).any(): assert s[m].min() >= s[~m].max()

def test_each_layer_keeps_its_count():
    torch.manual_seed(0)
    sm = supermask_model(get_model('conv4', width=0.25), density=0.3)
    _, mask = to_ticket(sm)
    for n, m in mask.items(): assert int(m.sum()) == kept_count(m.numel(), 0.3), n

# --- straight-through gradients ---------------------------------------------------------------------------------------

def test_get_subnet_is_straight_through():
    s = torch.randn(20, requires_grad=True)
    (GetSubnet.apply(s, 0.5) * torch.arange(20.)).sum().backward()
    assert torch.equal(s.grad, torch.arange(20.))   # h is the identity backwards

@pytest.mark.parametrize('kind', ['conv', 'linear'])
def test_score_gradient_is_equation_5(kind):
    "grad(s) = dL/d(w*h) * w * sign(s): Equation 5/24 through the |s| of footnote 2; pruned weights get it too."
    torch.manual_seed(0)
    layer = SupermaskConv2d(3, 4, 3, padding=1, bias=False) if kind == 'conv' else SupermaskLinear(12, 5, bias=False)
    layer.setup_supermask(0.3)
    nn.init.uniform_(layer.scores, -1, 1)
    x = torch.randn(2, 3, 6, 6) if kind == 'conv' else torch.randn(4, 12)
    layer(x).square().sum().backward()
    w_eff = (layer.weight * layer.keep_mask()).requires_grad_()
    out = F.conv2d(x, w_eff, padding=1) if kind == 'conv' else F.linear(x, w_eff)
    out.square().sum().backward()
    torch.testing.assert_close(layer.scores.grad, w_eff.grad * layer.weight * layer.scores.sign())
    assert layer.weight.grad is None
    assert (layer.scores.grad[~layer.keep_mask()] != 0).any()

def test_bernoulli_sample_is_straight_through():
    torch.manual_seed(0)
    layer = SupermaskLinear(12, 5, bias=False)
    layer.setup_supermask(1.0, method='bernoulli')
    nn.init.uniform_(layer.scores, -2, 2)
    x = torch.randn(4, 12)
    state = torch.random.get_rng_state()
    layer(x).square().sum().backward()
    torch.random.set_rng_state(state)
    p = torch.sigmoid(layer.scores.detach())
    sample = (torch.rand_like(p) < p).float()            # the same draw as the forward pass
    w_eff = (layer.weight * sample).requires_grad_()
    F.linear(x, w_eff).square().sum().backward()
    torch.testing.assert_close(layer.scores.grad, w_eff.grad * layer.weight * p * (1 - p))

def test_bernoulli_samples_have_probability_p():
    torch.manual_seed(0)
    p = torch.tensor([0.1, 0.5, 0.9]).repeat(40000, 1)
    x = BernoulliSample.apply(p)
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(x.mean(0), p[0], atol=0.01, rtol=0)

def test_bernoulli_eval_masks():
    torch.manual_seed(0)
    layer = SupermaskLinear(50, 10)
    layer.setup_supermask(1.0, 'bernoulli', 'threshold')
    nn.init.uniform_(layer.scores, -2, 2)
    layer.eval()
    x = torch.randn(3, 50)
    p = torch.sigmoid(layer.scores)
    assert torch.equal(layer(x), layer(x))
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight * (p > 0.5), layer.bias))
    layer.eval_mask = 'expected'
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight * p, layer.bias))
    layer.eval_mask = 'sample'
    assert not torch.equal(layer(x), layer(x))   # a fresh sample each forward, as the reference code evaluates
    layer.train(); layer.eval_mask = 'threshold'
    assert not torch.equal(layer(x), layer(x))   # training always samples

# --- frozen weights under the Trainer ---------------------------------------------------------------------------------

@pytest.mark.parametrize('model,method,bn', [('lenet_300_100', 'edge_popup', 'nonaffine'),
                                             ('resnet20', 'edge_popup', 'nonaffine'), ('resnet20', 'edge_popup', 'learned'),
                                             ('lenet_300_100', 'bernoulli', 'nonaffine')])
def test_trainer_keeps_weights_bit_identical(digits, model, method, bn):
    train, _ = digits
    torch.manual_seed(0)
    net = get_model(model, train.num_classes, train.shape, width=0.25 if model != 'lenet_300_100' else 1.0)
    sm = supermask_model(net, method=method, bn=bn, weight_init='signed_kaiming_constant')
    before = {n: p.detach().clone() for n, p in sm.named_parameters()}
    hp = supermask_train_hparams(method, dataset='digits', model=model, batch_size=32, training_steps='6it', augment=False, precision='fp32')
    tr = Trainer(sm, hp, train, device='cpu').fit()
    learned = {n for n, p in sm.named_parameters() if p.requires_grad}
    is_bn = lambda n: isinstance(sm.get_submodule(n.rpartition('.')[0]), nn.BatchNorm2d)
    assert learned == {n for n, _ in sm.named_parameters() if n.endswith('scores') or (bn == 'learned' and is_bn(n))}
    for n, p in sm.named_parameters():
        if n in learned: assert not torch.equal(p, before[n]), n
        else: assert torch.equal(p, before[n]), n
    names = {id(p): n for n, p in sm.named_parameters()}
    assert {names[id(p)] for p in tr.opt.state} == learned   # momentum (and weight decay) only for what learns
    assert tr.opt.param_groups[0]['weight_decay'] == PAPER_WDS[method]   # Zhou et al.'s masks: 0, as the authors ran them

def test_scores_get_weight_decay():
    "One SGD step, zero loss gradient: the scores shrink by lr * weight_decay, as in the reference code."
    torch.manual_seed(0)
    sm = supermask_model(get_model('lenet_300_100', 10, (1, 8, 8)))
    opt = torch.optim.SGD(sm.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    s0 = sm.fc1.scores.detach().clone()
    (sm(torch.randn(2, 1, 8, 8)).sum() * 0).backward()
    opt.step()
    torch.testing.assert_close(sm.fc1.scores.detach(), s0 * (1 - 0.1 * 1e-4))

# --- random weights ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('shape', [(64, 32, 3, 3), (256, 4096)])
def test_signed_kaiming_constant_is_plus_minus_std(shape):
    torch.manual_seed(0)
    w = torch.empty(shape)
    std = math.sqrt(2 / math.prod(shape[1:]))
    init_random_weights_(w, 'signed_kaiming_constant')
    assert torch.equal(w.abs().unique(), torch.tensor([std]))
    assert abs((w > 0).float().mean().item() - 0.5) < 0.02
    for k in (0.1, 0.3, 0.5, 0.9):
        init_random_weights_(w, 'scaled_signed_kaiming_constant', k)
        assert torch.equal(w.abs().unique(), torch.tensor([std * math.sqrt(1 / k)]))

def test_normal_inits_have_their_std():
    torch.manual_seed(0)
    w = torch.empty(128, 64, 3, 3)
    std = math.sqrt(2 / (64 * 9))
    for init, k, want in [('kaiming_normal', 1.0, std), ('scaled_kaiming_normal', 0.3, std / math.sqrt(0.3)),
                          ('xavier_normal', 1.0, std / math.sqrt(2)), ('kaiming_uniform', 1.0, std)]:
        init_random_weights_(w, init, k)
        assert abs(w.std().item() / want - 1) < 0.01, init
        assert abs(w.mean().item()) < 0.01 * want
    init_random_weights_(w, 'xavier_constant')
    assert torch.equal(w.abs().unique(), torch.tensor([std / math.sqrt(2)]))
    with pytest.raises(ValueError, match='signed_kaiming_constant'): init_random_weights_(w, 'he')

def test_supermask_model_scales_by_its_density():
    torch.manual_seed(0)
    sm = supermask_model(get_model('conv2', width=0.25), density=0.25, weight_init='scaled_signed_kaiming_constant')
    assert torch.equal(sm.conv2.weight.abs().unique(), torch.tensor([math.sqrt(2 / (16 * 9)) * 2]))

def test_scores_start_kaiming_uniform():
    torch.manual_seed(0)
    sm = supermask_model(get_model('conv2'))
    s, bound = sm.conv2.scores, 1 / math.sqrt(64 * 9)    # kaiming_uniform_(a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert s.abs().max() <= bound and s.abs().max() > 0.95 * bound
    c = supermask_model(get_model('conv2'), score_init='constant', score_constant=0.25, method='bernoulli')
    assert torch.equal(c.fc1.scores.unique(), torch.tensor([0.25]))

# --- conversion and tickets -------------------------------------------------------------------------------------------

def test_supermask_model_is_deterministic_and_leaves_model_alone():
    torch.manual_seed(0)
    net = get_model('resnet20', width=0.25)
    ref = {k: v.clone() for k, v in net.state_dict().items()}
    torch.manual_seed(3); a = supermask_model(net)
    torch.manual_seed(3); b = supermask_model(net)
    assert a.state_dict().keys() == b.state_dict().keys()
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert all(torch.equal(v, ref[k]) for k, v in net.state_dict().items())
    assert all(type(m) in (nn.Conv2d, nn.Linear) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))

def test_first_and_last_layer_options():
    torch.manual_seed(0)
    net = get_model('conv4', width=0.25)
    sm = supermask_model(net, prune_first=False, prune_last=False)
    assert type(sm.conv1) is nn.Conv2d and type(sm.fc3) is nn.Linear and isinstance(sm.conv2, SupermaskConv2d)
    assert not sm.conv1.weight.requires_grad and not sm.fc3.weight.requires_grad
    _, mask = to_ticket(sm)
    assert mask['conv1.weight'].all() and mask['fc3.weight'].all()
    assert abs(mask.layer_densities()['conv2.weight'] - 0.5) < 1e-3
    all_in = supermask_model(net)
    assert isinstance(all_in.conv1, SupermaskConv2d) and isinstance(all_in.fc3, SupermaskLinear)   # the paper's default
    scaled = supermask_model(net, density=0.25, weight_init='scaled_signed_kaiming_constant', prune_first=False)
    assert torch.equal(scaled.conv1.weight.abs().unique(), torch.tensor([math.sqrt(2 / 27)]))          # dense: k = 1
    assert torch.equal(scaled.conv2.weight.abs().unique(), torch.tensor([2 * math.sqrt(2 / (16 * 9))]))

@pytest.mark.parametrize('model,kw', [('conv4', {}), ('lenet_300_100', dict(density=0.1)),
                                      ('resnet18', dict(density=0.3, prune_first=False)),
                                      ('conv2', dict(method='bernoulli', eval_mask='threshold'))])
def test_to_ticket_computes_the_same_network(model, kw):
    torch.manual_seed(0)
    shape = (1, 28, 28) if model == 'lenet_300_100' else (3, 32, 32)
    net = get_model(model, 10, shape, width=0.125 if model == 'resnet18' else 0.5)
    sm = supermask_model(net, **kw)
    for p in sm.parameters():
        if p.requires_grad: nn.init.uniform_(p, -1, 1)   # as if trained
    state, mask = to_ticket(sm)
    assert list(mask) == list(prunable_parameters(net))
    assert state.keys() == net.state_dict().keys()
    plain = get_model(model, 10, shape, width=0.125 if model == 'resnet18' else 0.5)
    plain.load_state_dict(state)
    x = torch.randn(6, *shape)
    if kw.get('method') != 'bernoulli': assert torch.equal(sm(x), plain(x))   # train mode (a Bernoulli mask samples)
    sm.eval(); plain.eval()
    assert torch.equal(sm(x), plain(x))
    for n, m in mask.items(): assert not state[n][~m].any()
    full, _ = to_ticket(sm, apply_mask=False)
    assert all(torch.equal(full[n], p) for n, p in prunable_parameters(sm).items())

def test_ticket_trains_under_the_trainer_mask(digits):
    train, _ = digits
    torch.manual_seed(0)
    sm = supermask_model(get_model('lenet_300_100', 10, train.shape), density=0.2)
    weights, found, rand = lottery_check(sm, seed=0)
    assert {n: int(m.sum()) for n, m in rand.items()} == {n: int(m.sum()) for n, m in found.items()}
    assert rand != found
    assert all(torch.equal(weights[n], p) for n, p in prunable_parameters(sm).items())   # unmasked random weights
    net = get_model('lenet_300_100', 10, train.shape)
    net.load_state_dict(weights)
    Trainer(net, TrainHparams(training_steps='5it', precision='fp32'), train, mask=found, device='cpu').fit()
    for n, p in prunable_parameters(net).items(): assert not p[~found[n]].any()

# --- hyperparameters ----------------------------------------------------------------------------------------------------

def test_hparams():
    assert SupermaskHparams().nondefault() == {}
    assert SupermaskHparams().hash != SupermaskHparams(density=0.3).hash
    with pytest.raises(ValueError, match='edge_popup, bernoulli'): SupermaskHparams(method='dnw')
    with pytest.raises(ValueError, match='nonaffine, learned'): SupermaskHparams(bn='frozen')
    with pytest.raises(ValueError, match='choose one of'): supermask_model(get_model('conv2'), weight_init='normal')

def test_paper_train_hparams():
    h = supermask_train_hparams(model='conv6')
    assert (h.dataset, h.batch_size, h.lr, h.momentum, h.weight_decay, h.schedule, h.training_steps, h.augment) == \
        ('cifar10', 128, 0.1, 0.9, 1e-4, 'cosine', '100ep', True)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert supermask_train_hparams('bernoulli').lr == 200.0
    with pytest.raises(ValueError, match='edge_popup, bernoulli'): supermask_train_hparams('zhou')

# --- supermask runs on the runs layer, sweeps ------------------------------------------------------------------------

from ticketlab.edgepopup import (DENSE, PAPER_LRS, SUPERMASK_KIND, build_supermask_model, chosen_weight_summary, chosen_weights,
                                 learned_dense_run, load_supermask, method_hparams, supermask_points, supermask_run,
                                 supermask_spec, supermask_sweep)
from ticketlab.store import Store

def _thp(**kw):
    return supermask_train_hparams(**{**dict(dataset='digits', model='lenet_300_100', batch_size=64, training_steps='2ep',
                                             augment=False, precision='fp32'), **kw})

def test_supermask_run_keeps_the_random_weights_and_is_reused(tmp_path, digits, monkeypatch):
    hp, shp = _thp(), SupermaskHparams(density=0.3)
    run = supermask_run(hp, shp, Store(tmp_path), data=digits, progress=False)
    assert run.kind == SUPERMASK_KIND and run.key['supermask'] == shp.to_dict() and run.done
    fresh = build_supermask_model(hp, shp, digits[0]).state_dict()
    for n, p in load_supermask(run, digits).state_dict().items():
        assert torch.equal(p, fresh[n]) != n.endswith('scores'), n          # frozen bit for bit; the scores moved
    import ticketlab.runs
    monkeypatch.setattr(ticketlab.runs, '_fit', lambda *a, **k: pytest.fail('a stored run was trained again'))
    assert supermask_run(hp, shp, Store(tmp_path), data=digits, progress=False) == run

@pytest.mark.parametrize('method', ['edge_popup', 'bernoulli'])
def test_an_interrupted_supermask_run_resumes_exactly(tmp_path, digits, method):
    from ticketlab.train import Callback
    class Crash(Callback):
        def after_step(self, t):
            if t.step == 30: raise KeyboardInterrupt
    hp, shp = method_hparams(_thp(), method), SupermaskHparams(method=method, density=0.5)
    spec = lambda **kw: supermask_spec(hp, shp, digits, save_every='10it', **kw)
    whole = train_runs_one(spec(), Store(tmp_path/'a'))
    with pytest.raises(KeyboardInterrupt): train_runs_one(spec(callbacks=[Crash()]), Store(tmp_path/'b'))
    resumed = train_runs_one(spec(), Store(tmp_path/'b'))
    a, b = (r.weights(r.checkpoint_steps()[-1]) for r in (whole, resumed))
    assert all(torch.equal(a[n], b[n]) for n in a)

def train_runs_one(spec, store):
    from ticketlab.runs import train_runs
    return train_runs([spec], store, progress=False)[0]

def test_sweep_rows_columns_and_reuse(tmp_path, digits):
    shps = [SupermaskHparams(density=0.5), SupermaskHparams(method='bernoulli')]
    pts = supermask_points(['lenet_300_100'], [0.5, 1.0], shps)
    assert len(pts) == 6 and [p[2] for p in pts[:3]] == [None, *shps]
    df = supermask_sweep(_thp(), pts, 1, Store(tmp_path), data=digits)
    assert {'model', 'width', 'method', 'density', 'weight_init', 'score_init', 'bn', 'prune_first', 'prune_last', 'eval_mask',
            'replicate', 'lr', 'kept', 'test_accuracy', 'test_loss', 'train_accuracy', 'run'} <= set(df.columns)
    assert df.method.tolist() == [DENSE, 'edge_popup', 'bernoulli'] * 2 and df.width.tolist() == [0.5] * 3 + [1.0] * 3
    assert df.lr.tolist() == [PAPER_LRS[m] for m in df.method]
    assert df[df.method == DENSE].kept.eq(1.0).all() and df[df.method == 'bernoulli'].density.isna().all()
    assert np.allclose(df[df.method == 'edge_popup'].kept, 0.5, atol=1e-3) and df.test_accuracy.between(0, 1).all()
    kinds = {r: Store(tmp_path).runs().set_index('run').kind[r] for r in df.run}
    assert [kinds[r] for r in df.run] == ['train', SUPERMASK_KIND, SUPERMASK_KIND] * 2
    again = supermask_sweep(_thp(), pts, 1, Store(tmp_path), data=digits)
    assert len(Store(tmp_path).runs()) == 6 and again.run.tolist() == df.run.tolist()

@pytest.mark.parametrize('bad,expect', [
    (dict(points=[('lenet_300_100', 1.0, 0.5)]), 'SupermaskHparams or None'),
    (dict(points=[('conv5', 1.0, None)]), 'conv4'),
    (dict(replicates=0), '>= 1'),
    (dict(lrs={'zhou': 10.0}), 'choose one of edge_popup, bernoulli, dense')])
def test_sweep_bad_input_names_the_choices(tmp_path, digits, bad, expect):
    kw = {**dict(points=[('lenet_300_100', 1.0, None)], replicates=1), **bad}
    with pytest.raises((ValueError, TypeError), match=re.escape(expect)): supermask_sweep(_thp(), store=Store(tmp_path), data=digits, **kw)
    assert not (tmp_path/SUPERMASK_KIND).exists() and not (tmp_path/'train').exists()

def test_chosen_weights_count_the_kept_weights(tmp_path, digits):
    torch.manual_seed(0)
    sm = supermask_model(get_model('lenet_300_100', 10, digits[0].shape), density=0.3)
    h, s = chosen_weights(sm, bins=10), chosen_weight_summary(sm)
    assert list(h.groupby('layer', sort=False)['all'].sum()) == [p.numel() for p in prunable_parameters(sm).values()]
    assert list(h.groupby('layer', sort=False).chosen.sum()) == [kept_count(p.numel(), 0.3) for p in prunable_parameters(sm).values()]
    assert np.allclose(s.kept, 0.3, atol=1e-3) and (s.mean_abs_all > 0).all()

def test_load_supermask_refuses_a_dense_run(tmp_path, digits):
    run = learned_dense_run(method_hparams(_thp(), DENSE), Store(tmp_path), data=digits, progress=False)
    with pytest.raises(ValueError, match='not a supermask run'): load_supermask(run, digits)
