"Property tests of ticketlab.masks: exact counts, nesting, densities, warnings, random pruning, identity."
import math, os, warnings
import pytest, torch
from hypothesis import given, settings, strategies as st
from ticketlab.masks import Mask, magnitude_prune, prune_to_density, random_prune, random_prune_fraction
from ticketlab.models import get_model

FAST = settings(max_examples=60, deadline=None)

@st.composite
def weights(draw, min_layers=1, max_layers=4):
    "A dict name -> small float tensor; `ties` draws from few values so that magnitudes collide."
    n = draw(st.integers(min_layers, max_layers))
    seed, ties = draw(st.integers(0, 2**31 - 1)), draw(st.booleans())
    g = torch.Generator().manual_seed(seed)
    out = {}
    for i in range(n):
        shape = tuple(draw(st.lists(st.integers(1, 6), min_size=1, max_size=3)))
        w = torch.randint(-3, 4, shape, generator=g).float() if ties else torch.randn(shape, generator=g)
        out[f'layer{i}.weight'] = w
    return out

def random_mask(w, seed, p=0.3):
    g = torch.Generator().manual_seed(seed)
    return Mask({n: torch.rand(t.shape, generator=g) > p for n, t in w.items()})

fractions = st.floats(0, 0.95, allow_nan=False)

def quiet(f, *a, **k):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return f(*a, **k)

def smallest_were_pruned(w, old, new, layers):
    "Every newly pruned weight is no larger in magnitude than every weight still kept (within `layers`)."
    pruned = torch.cat([w[n].abs()[old[n] & ~new[n]] for n in layers])
    kept = torch.cat([w[n].abs()[new[n]] for n in layers])
    return len(pruned) == 0 or len(kept) == 0 or pruned.max() <= kept.min()

@FAST
@given(weights(), st.integers(0, 1000), fractions)
def test_global_exact_count_and_order(w, seed, f):
    old = random_mask(w, seed)
    new = quiet(magnitude_prune, w, old, f)
    r = old.num_kept
    assert new.num_kept == r - round(f * r)
    assert new <= old and new.is_nested_in(old)
    assert smallest_were_pruned(w, old, new, list(w))

@FAST
@given(weights(), st.integers(0, 1000), fractions)
def test_layerwise_exact_count_and_order(w, seed, f):
    old = random_mask(w, seed)
    new = quiet(magnitude_prune, w, old, f, layerwise=True)
    assert new <= old
    for n in w:
        r = int(old[n].sum())
        assert int(new[n].sum()) == r - round(f * r)
        assert abs(int(new[n].sum()) - (1 - f) * r) <= 0.5 + 1e-9  # within rounding, per layer
        assert smallest_were_pruned(w, old, new, [n])

@FAST
@given(weights(min_layers=2), st.integers(1, 8), st.booleans())
def test_successive_prunings_nested_and_density(w, levels, layerwise):
    masks = [Mask.ones_like(w)]
    for _ in range(levels): masks.append(quiet(magnitude_prune, w, masks[-1], 0.2, layerwise=layerwise))
    assert all(b <= a for a, b in zip(masks, masks[1:]))
    N = masks[0].num_total
    for L, m in enumerate(masks):  # each level's rounding moves at most half a weight (per layer, layerwise)
        slack = 0.5 * L * (len(w) if layerwise else 1) + 1e-9
        assert abs(m.num_kept - N * 0.8**L) <= slack

@FAST
@given(weights(), st.floats(0.01, 1.0))
def test_prune_to_density(w, d):
    m = quiet(prune_to_density, w, d)
    N = m.num_total
    assert m.num_kept == N - round((1 - d) * N)

def test_density_of_lenet_after_levels():
    torch.manual_seed(0)
    net = get_model('lenet_300_100', in_shape=(1, 28, 28))
    m = Mask.ones_like(net)
    for L in range(1, 11):
        m = magnitude_prune(net, m, 0.2)
        assert abs(m.density - 0.8**L) < L / m.num_total

@pytest.mark.filterwarnings('ignore:layer a pruned to zero')
def test_ties_broken_by_position():
    w = {'a': torch.ones(4), 'b': torch.ones(2, 2)}
    m = magnitude_prune(w, None, 0.5)
    assert m['a'].tolist() == [False] * 4 and m['b'].all()  # the earliest four of eight ties go
    m2 = magnitude_prune({'a': -torch.ones(4), 'b': torch.ones(2, 2)}, None, 0.5)  # magnitude, not sign
    assert m2 == m
    assert magnitude_prune(w, None, 0.5, layerwise=True)['b'].tolist() == [[False, False], [True, True]]

def test_model_and_dict_agree():
    torch.manual_seed(0)
    net = get_model('conv2', width=0.125)
    from ticketlab.models import prunable_parameters
    a = magnitude_prune(net, None, 0.3)
    b = magnitude_prune({n: p.detach().clone() for n, p in prunable_parameters(net).items()}, None, 0.3)
    assert a == b and a.hash == b.hash

def test_zero_layer_warning():
    w = {'big': torch.arange(1., 21.), 'tiny': torch.full((2,), 1e-3)}
    with pytest.warns(UserWarning, match='layer tiny pruned to zero'): m = magnitude_prune(w, None, 0.5)
    assert int(m['tiny'].sum()) == 0 and m.num_kept == 11
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        magnitude_prune(w, None, 0.5, layerwise=True)  # layerwise keeps one of two: no warning

@pytest.mark.parametrize('f', [-0.1, 1.0, 1.5])
def test_fraction_out_of_range(f):
    with pytest.raises(ValueError, match=r'\[0, 1\)'): magnitude_prune({'a': torch.randn(3)}, None, f)

@FAST
@given(weights(), st.integers(0, 1000), st.integers(0, 2**32))
def test_random_prune_keeps_layer_counts(w, mseed, seed):
    m = random_mask(w, mseed, p=0.6)
    r = quiet(random_prune, m, seed)
    assert {n: int(t.sum()) for n, t in r.items()} == {n: int(t.sum()) for n, t in m.items()}
    assert {n: t.shape for n, t in r.items()} == {n: t.shape for n, t in m.items()}
    assert r == quiet(random_prune, m, seed)  # reproducible
    g = quiet(random_prune, m, seed, layerwise=False)
    assert g.num_kept == m.num_kept

def test_random_prune_seeds_and_densities():
    torch.manual_seed(0)
    net = get_model('lenet_300_100', in_shape=(1, 28, 28))
    ticket = magnitude_prune(net, None, 0.9, layerwise=False)
    a, b = random_prune(ticket, 0), random_prune(ticket, 1)
    assert a != b and a == random_prune(ticket, 0)
    assert a.layer_densities() == ticket.layer_densities()
    assert random_prune(ticket.layer_densities(), 0, like=net) == a  # same counts, same per-layer streams
    # a layer's draw depends only on (seed, name, count): dropping another layer leaves it unchanged
    sub = Mask({n: ticket[n] for n in ['fc2.weight', 'fc3.weight']})
    assert torch.equal(random_prune(sub, 0)['fc2.weight'], a['fc2.weight'])

def test_mask_basics(tmp_path):
    m = Mask({'a': torch.tensor([True, False, True, True]), 'b': torch.tensor([[0, 1], [0, 0]])})
    assert m['b'].dtype == torch.bool
    assert (m.num_kept, m.num_total, m.numel(), m.density) == (4, 8, 8, 0.5)
    assert m.layer_densities() == {'a': 0.75, 'b': 0.25}
    df = m.report()
    assert list(df.columns) == ['layer', 'shape', 'kept', 'total', 'density']
    assert df.to_dict('list') == {'layer': ['a', 'b'], 'shape': [(4,), (2, 2)], 'kept': [3, 1], 'total': [4, 4], 'density': [0.75, 0.25]}
    m.save(tmp_path / 'm.pt')
    assert Mask.load(tmp_path / 'm.pt') == m and list(tmp_path.iterdir()) == [tmp_path / 'm.pt']
    assert Mask.from_state_dict(m.state_dict()) == m
    ones = Mask.ones_like({'a': torch.zeros(4), 'b': torch.zeros(2, 2)})
    assert m <= ones and not ones <= m and (m & ones) == m and (ones & m) == m
    with pytest.raises(ValueError, match='different layers'): m <= Mask({'a': torch.ones(4, dtype=torch.bool)})
    with pytest.raises(TypeError): hash(m)

def test_hash_stable():
    m = Mask({'a': torch.tensor([True, False, True]), 'b': torch.ones(2, 2, dtype=torch.bool)})
    assert m.hash == '72203df375376e44'  # pinned: a mask's identity must never change between versions
    reordered = Mask({'b': m['b'], 'a': m['a']})
    assert reordered == m and reordered.hash == m.hash
    flipped = Mask({'a': torch.tensor([True, True, True]), 'b': m['b']})
    assert flipped != m and flipped.hash != m.hash
    assert Mask({'a': m['a'], 'b': m['b'].reshape(4)}).hash != m.hash  # shape is part of identity

def test_apply_zeroes_pruned_weights():
    torch.manual_seed(0)
    net = get_model('resnet20', width=0.25)
    m = magnitude_prune(net, None, 0.5)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    assert m.apply_(net) is net
    for n, p in net.named_parameters():
        if n in m:
            assert (p[~m[n]] == 0).all() and torch.equal(p[m[n]], before[n][m[n]])
        else:
            assert torch.equal(p, before[n])  # biases, BatchNorm untouched
    assert not any(p.requires_grad is False for p in net.parameters())
    with pytest.raises(ValueError, match='not a parameter'): Mask({'nope': torch.ones(1, dtype=torch.bool)}).apply_(net)

@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_cuda_roundtrip():
    torch.manual_seed(0)
    net = get_model('conv2', width=0.125).cuda()
    m = magnitude_prune(net, Mask.ones_like(net), 0.4)
    assert next(iter(m.values())).is_cuda
    assert m.to('cpu') == m and m.to('cpu').hash == m.hash
    assert magnitude_prune(net.cpu(), m.to('cpu'), 0.2) == magnitude_prune(net.cuda(), m, 0.2).to('cpu')
    assert random_prune(m, 0).to('cpu') == random_prune(m.to('cpu'), 0)

class _RunsShell:
    "Unpickling this runs `touch marker` (what a malicious file would do)."
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (os.system, (f'touch {self.marker}',))

def test_mask_file_that_would_run_code_is_refused(tmp_path):
    from ticketlab.masks import UnsafeFileError
    marker, p = tmp_path/'ran', tmp_path/'mask.pt'
    torch.save({'fc1.weight': torch.ones(3, dtype=torch.bool), 'fc2.weight': _RunsShell(marker)}, p)
    torch.load(p, weights_only=False)                     # the payload is live: an unsafe load runs it ...
    assert marker.exists(); marker.unlink()
    with pytest.raises(UnsafeFileError, match='nothing in it was run') as e: Mask.load(p)
    assert str(p) in str(e.value) and 'system' in str(e.value)
    assert not marker.exists()                            # ... Mask.load refuses it before anything runs
    torch.save(['not', 'a', 'mask'], p)
    with pytest.raises(ValueError, match='not a mask file'): Mask.load(p)

@FAST
@given(weights(), st.integers(0, 1000), st.integers(0, 2**32), fractions, st.booleans())
def test_random_prune_fraction_nested_exact_and_reproducible(w, mseed, seed, f, layerwise):
    m = random_mask(w, mseed)
    r = quiet(random_prune_fraction, m, f, seed, layerwise)
    assert r <= m and r == quiet(random_prune_fraction, m, f, seed, layerwise)
    if layerwise:
        for n in m: assert int(r[n].sum()) == int(m[n].sum()) - round(f * int(m[n].sum()))
    else: assert r.num_kept == m.num_kept - round(f * m.num_kept)

def test_random_prune_fraction_is_not_magnitude_pruning():
    torch.manual_seed(0)
    net = get_model('lenet_300_100', in_shape=(1, 28, 28))
    m = magnitude_prune(net, None, 0.5)
    a = random_prune_fraction(m, 0.5, 0)
    assert a != magnitude_prune(net, m, 0.5) and a != random_prune_fraction(m, 0.5, 1)
    with pytest.raises(ValueError, match=r'\[0, 1\)'): random_prune_fraction(m, 1.0, 0)
