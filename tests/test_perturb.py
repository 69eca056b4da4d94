"Property tests of ticketlab.perturb: permutations keep multisets and signs, pruned weights stay, identities, noise scale, seeds, Figure 8."
import math
import pandas as pd, pytest, torch
from hypothesis import given, settings, strategies as st
from scipy import stats
from ticketlab.core import seed_all
from ticketlab.masks import Mask
from ticketlab.models import get_model, prunable_parameters
from ticketlab.perturb import (KINDS, SCOPES, Perturbation, effective_perturbation, effective_perturbation_by_layer,
                               effective_std_correlation, effective_std_points, fresh_initialization, gaussian_noise,
                               grouped_permutation, init_sign_shuffled_magnitude, init_std, mix_sign_magnitude,
                               paper_perturbations, perturb, plot_effective_std, shuffle_weights)
from ticketlab.core import make_generator

FAST = settings(max_examples=25, deadline=None)

@st.composite
def subnetworks(draw):
    "(w_k, w_0, w_fresh, mask): a few prunable layers (2-4 dims, some tied values and zeros), a bias outside the mask."
    n, seed = draw(st.integers(1, 3)), draw(st.integers(0, 2**31 - 1))
    ties, p = draw(st.booleans()), draw(st.floats(0, 0.9))
    g = torch.Generator().manual_seed(seed)
    def draw_t(shape): return torch.randint(-2, 3, shape, generator=g).float() if ties else torch.randn(shape, generator=g)
    shapes = [tuple(draw(st.lists(st.integers(1, 4), min_size=2, max_size=4))) for _ in range(n)]
    states = [{**{f'l{i}.weight': draw_t(s) for i, s in enumerate(shapes)}, 'head.bias': draw_t((3,))} for _ in range(3)]
    mask = Mask({f'l{i}.weight': torch.rand(s, generator=g) >= p for i, s in enumerate(shapes)})
    for s in states: mask.apply_(s)
    return (*states, mask)

def multiset(t): return sorted(t.reshape(-1).tolist())
def unchanged_outside(out, wk, mask):
    "Pruned entries and unmasked tensors are exactly as in `wk` (and the keys and dtypes are the same)."
    assert list(out) == list(wk) and all(out[n].dtype == wk[n].dtype and out[n].shape == wk[n].shape for n in wk)
    for n, t in wk.items():
        if n in mask: assert torch.equal(out[n][~mask[n]], t[~mask[n]])
        else: assert torch.equal(out[n], t)

def groups_of(t, m, scope):
    "The kept values of one layer per group of `scope` (global is checked separately)."
    return [t[m]] if scope == 'layer' else [t[o][m[o]] for o in range(t.shape[0])]

@FAST
@given(subnetworks(), st.sampled_from(SCOPES), st.booleans(), st.integers(0, 5))
def test_shuffle_keeps_group_multisets(net, scope, same_sign, seed):
    wk, _, _, mask = net
    out = shuffle_weights(wk, mask, scope, same_sign, seed)
    unchanged_outside(out, wk, mask)
    if scope == 'global':
        assert multiset(torch.cat([out[n][m] for n, m in mask.items()])) == multiset(torch.cat([wk[n][m] for n, m in mask.items()]))
    else:
        for n, m in mask.items():
            for a, b in zip(groups_of(out[n], m, scope), groups_of(wk[n], m, scope)): assert multiset(a) == multiset(b)
    if same_sign:
        for n in mask: assert torch.equal(torch.sign(out[n]), torch.sign(wk[n]))

@FAST
@given(subnetworks(), st.integers(0, 5))
def test_identities(net, seed):
    wk, _, _, mask = net
    for out in (gaussian_noise(wk, mask, 0.0, seed), mix_sign_magnitude(wk, mask, wk, wk),
                perturb(wk, None, mask, Perturbation('noise', noise_scale=0.0, seed=seed))[0], perturb(wk, None, mask, Perturbation())[0]):
        for n in wk: assert torch.equal(out[n], wk[n])
    e = effective_perturbation(wk, wk, mask)
    assert mask.num_kept == 0 or (e['effective_mean'], e['effective_std']) == (0.0, 0.0)

@FAST
@given(subnetworks(), st.integers(0, 3))
def test_every_kind_leaves_pruned_weights_and_inputs(net, seed):
    wk, w0, wf, mask = net
    copies = [{n: t.clone() for n, t in s.items()} for s in (wk, w0, wf)]
    ps = paper_perturbations(seed) + [Perturbation('shuffle_same_sign', scope='global', seed=seed), Perturbation(sign_from='fresh', magnitude_from='0')]
    assert {p.kind for p in ps} == set(KINDS)
    sigma = {n: 1.0 for n in mask}   # the drawn layers' fan-in may be tiny; σ given explicitly
    for p in ps:
        out, info = perturb(wk, w0, mask, p, fresh=wf, sigma=sigma)
        unchanged_outside(out, wk, mask)
        assert info == effective_perturbation(out, wk, mask) and info['n_weights'] == mask.num_kept
    for s, c in zip((wk, w0, wf), copies): assert all(torch.equal(s[n], c[n]) for n in s)   # pure: inputs untouched

@FAST
@given(subnetworks())
def test_sign_magnitude_mixing(net):
    wk, w0, _, mask = net
    out = mix_sign_magnitude(wk, mask, signs=wk, magnitudes=w0)
    for n, m in mask.items():
        assert torch.equal(out[n][m].abs(), w0[n][m].abs())
        nz = m & (w0[n] != 0)
        assert torch.equal(torch.sign(out[n][nz]), torch.sign(wk[n][nz]) + (wk[n][nz] == 0).float())  # copysign(x, ±0) = ±|x|

@FAST
@given(subnetworks(), st.integers(0, 3))
def test_init_signs_with_shuffled_magnitudes(net, seed):
    wk, w0, _, mask = net
    out = init_sign_shuffled_magnitude(wk, w0, mask, 'layer', seed)
    unchanged_outside(out, wk, mask)
    for n, m in mask.items():
        assert multiset(out[n][m].abs()) == multiset(wk[n][m].abs())
        assert torch.equal(torch.signbit(out[n][m]), torch.signbit(w0[n][m]))

@FAST
@given(st.lists(st.integers(0, 3), max_size=40), st.integers(0, 9))
def test_grouped_permutation(groups, seed):
    g = torch.tensor(groups, dtype=torch.long)
    p = grouped_permutation(g, make_generator(seed))
    assert sorted(p.tolist()) == list(range(len(groups))) and torch.equal(g[p], g)

def test_grouped_permutation_is_uniform():
    "Each of the 6 orders of a 3-element group comes up about equally often."
    g, counts = torch.tensor([0, 1, 0, 0]), {}
    for s in range(1200):
        k = tuple(grouped_permutation(g, make_generator(s)).tolist()); counts[k] = counts.get(k, 0) + 1
    assert len(counts) == 6 and min(counts.values()) > 140

def big_state():
    w = fresh_initialization('lenet_300_100', 0, in_shape=(1, 28, 28))
    g = torch.Generator().manual_seed(0)
    return w, Mask({n: torch.rand(t.shape, generator=g) < 0.5 for n, t in w.items() if t.ndim > 1})

def small_state(seed=0):
    w = fresh_initialization('lenet_300_100', seed, in_shape=(1, 12, 12), width=0.2)
    g = torch.Generator().manual_seed(0)
    return w, Mask({n: torch.rand(t.shape, generator=g) < 0.5 for n, t in w.items() if t.ndim > 1})

def test_noise_std_is_n_sigma_per_layer():
    w, mask = big_state()
    out = gaussian_noise(w, mask, 1.5, seed=0)
    d = (out['fc1.weight'] - w['fc1.weight'])[mask['fc1.weight']]
    assert abs(d.std().item() / (1.5 * math.sqrt(2 / 784)) - 1) < 0.01 and abs(d.mean().item()) < 3e-4
    d = (out['fc2.weight'] - w['fc2.weight'])[mask['fc2.weight']]
    assert abs(d.std().item() / (1.5 * math.sqrt(2 / 300)) - 1) < 0.03

def test_init_std_is_the_init_distribution():
    w, _ = big_state()
    assert init_std(w['fc1.weight'].shape) == math.sqrt(2 / 784)
    assert abs(w['fc1.weight'].std().item() / init_std(w['fc1.weight'].shape) - 1) < 0.01
    conv = fresh_initialization('resnet20', 0)['blocks.8.conv2.weight']
    assert init_std(conv.shape) == math.sqrt(2 / (64 * 9)) and abs(conv.std().item() / init_std(conv.shape) - 1) < 0.02
    with pytest.raises(ValueError, match='no fan-in'): init_std((7,))

def test_fresh_initialization_is_a_runs_init_and_leaves_global_rng():
    seed_all(11); expect = get_model('conv2', in_shape=(3, 8, 8), width=1/16).state_dict()
    torch.manual_seed(5); a = torch.rand(3)
    torch.manual_seed(5); got = fresh_initialization('conv2', 11, in_shape=(3, 8, 8), width=1/16); b = torch.rand(3)
    assert torch.equal(a, b) and all(torch.equal(got[n], expect[n]) for n in expect)
    assert not torch.equal(got['conv1.weight'], fresh_initialization('conv2', 12, in_shape=(3, 8, 8), width=1/16)['conv1.weight'])

@pytest.mark.parametrize('p', [Perturbation('shuffle', scope=s) for s in SCOPES] + [Perturbation('shuffle_same_sign'),
                               Perturbation('init_sign_shuffled_magnitude'), Perturbation('noise', noise_scale=1.0)])
def test_deterministic_per_seed_and_seeds_differ(p):
    w, mask = small_state()
    w0, _ = small_state(1)
    a, ia = perturb(w, w0, mask, p)
    b, ib = perturb(w, w0, mask, p)
    c, _ = perturb(w, w0, mask, p.replace(seed=1))
    assert ia == ib and all(torch.equal(a[n], b[n]) for n in w)
    assert not torch.equal(a['fc1.weight'], c['fc1.weight'])

def test_module_and_mask_none():
    torch.manual_seed(0)
    net = get_model('conv2', in_shape=(3, 8, 8), width=1/16)
    out, info = perturb(net, None, None, Perturbation('shuffle', scope='filter'))
    assert info['n_weights'] == sum(p.numel() for p in prunable_parameters(net).values())
    with pytest.raises(ValueError, match='Mask.ones_like'): perturb(net.state_dict(), None, None, Perturbation('shuffle'))

def test_bf16_states_keep_dtype():
    w, mask = big_state()
    wb = {n: t.bfloat16() for n, t in w.items()}
    out, info = perturb(wb, None, mask, Perturbation('noise', noise_scale=1.0))
    assert out['fc1.weight'].dtype == torch.bfloat16 and abs(info['effective_std'] / 0.05 - 1) < 0.2
    assert all(torch.equal(gaussian_noise(wb, mask, 0.0)[n], wb[n]) for n in wb)

def test_bad_input_names_choices():
    with pytest.raises(ValueError, match='choose one of sign_magnitude, shuffle, shuffle_same_sign, init_sign_shuffled_magnitude, noise'):
        Perturbation('dropout')
    with pytest.raises(ValueError, match='choose one of global, layer, filter'): Perturbation('shuffle', scope='neuron')
    with pytest.raises(ValueError, match='choose one of k, 0, fresh'): Perturbation(sign_from='500')
    with pytest.raises(ValueError, match="noise_scale do\\(es\\) not apply to kind='shuffle'"): Perturbation('shuffle', noise_scale=1.0)
    w, mask = small_state()
    with pytest.raises(ValueError, match='global, layer, filter'): shuffle_weights(w, mask, 'neuron')
    with pytest.raises(ValueError, match='needs `fresh`'): perturb(w, w, mask, Perturbation(magnitude_from='fresh'))
    with pytest.raises(ValueError, match='needs `state_0`'): perturb(w, None, mask, Perturbation(sign_from='0'))
    with pytest.raises(ValueError, match='>= 0'): gaussian_noise(w, mask, -0.5)

def test_hashes_are_pinned():
    "A Perturbation's identity in the run store must not drift."
    assert Perturbation().hash == '44136fa355b3678a'
    assert Perturbation('noise', noise_scale=1.0).hash == '03e5d4ab2f58bbdf' == Perturbation('noise', noise_scale=1).hash
    assert Perturbation('shuffle', scope='filter', seed=3).hash == 'a19aa81adf862681'
    assert len({p.hash for p in paper_perturbations()}) == 14

def test_effective_perturbation_by_hand():
    wk = {'a': torch.tensor([[1., -2.], [0., 4.]]), 'b': torch.tensor([1., 1., 1.]), 'bias': torch.tensor([3.])}
    wp = {'a': torch.tensor([[2., -2.], [0., 9.]]), 'b': torch.tensor([0., 1., 1.]), 'bias': torch.tensor([-3.])}
    mask = Mask({'a': torch.tensor([[True, True], [False, False]]), 'b': torch.tensor([True, True, False])})
    d = [1., 0., -1., 0.]   # kept entries only: a[0,0], a[0,1], b[0], b[1]
    e = effective_perturbation(wp, wk, mask)
    assert e == dict(effective_mean=0.0, effective_std=math.sqrt(sum(x * x for x in d) / 4), n_weights=4)
    by = effective_perturbation_by_layer(wp, wk, mask)
    assert by.layer.tolist() == ['a', 'b'] and by.effective_std.tolist() == [0.5, 0.5] and by.effective_mean.tolist() == [0.5, -0.5]

def test_pearson_over_perturbation_means():
    rows = []
    for k, sign in ((500, -1), (2000, 1)):
        for i, (std, acc) in enumerate([(0.01, 0.9), (0.05, 0.7), (0.1, 0.75), (0.2, 0.3)]):
            for r, jitter in enumerate((-0.02, 0.02)):   # replicates average out exactly
                rows.append(dict(rewind_step=k, label=f'p{i}', family='noise', replicate=r, effective_std=std + jitter / 10,
                                 accuracy=(acc if sign < 0 else 1 - acc) + jitter))
    df = pd.DataFrame(rows)
    pts = effective_std_points(df, by=('rewind_step',))
    assert len(pts) == 8 and (pts.n_replicates == 2).all() and 'family' in pts
    out = effective_std_correlation(df, by=('rewind_step',))
    r, p = stats.pearsonr([0.01, 0.05, 0.1, 0.2], [0.9, 0.7, 0.75, 0.3])
    assert out.rewind_step.tolist() == [500, 2000] and out.n.tolist() == [4, 4]
    assert out.r.tolist() == pytest.approx([r, -r]) and out.p.tolist() == pytest.approx([p, p])
    with pytest.raises(ValueError, match='missing column'): effective_std_correlation(df.drop(columns='accuracy'))
    ax = plot_effective_std(df[df.rewind_step == 500])
    assert ax.get_title() == f'r = {r:.3f}, p = {p:.3g} (n = 4)'
    import matplotlib.pyplot as plt; plt.close('all')
