"""ticketlab.hessian: Hessian-vector products, Lanczos, Hutchinson, SLQ and Lemma 3.1 of the unmasking paper,
checked against exact Hessians (`torch.func.hessian`) of tiny float64 networks and against curvlinops where installed."""
import warnings

import numpy as np, pytest, torch, torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ticketlab.data import load_dataset
from ticketlab.masks import Mask
from ticketlab.hessian import (HessianOperator, as_linear_operator, eigsh_eigenvalues, gaussian_density, hutchinson_trace,
                               intersection_threshold, lanczos, max_pruning_ratio, rademacher, slq_quadrature,
                               spectral_density, top_eigenvalues)

f64 = torch.float64


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).to(f64)


def conv_bn(seed=0):
    "A tiny conv + BatchNorm net in train mode, with non-trivial running statistics."
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 4)).to(f64)
    with torch.no_grad():
        for _ in range(3): net(torch.randn(8, 2, 6, 6, dtype=f64) * 2 + 1)
    return net


def data(shape, n=(9, 4), classes=3, seed=1):
    "Batches of unequal sizes (so that weighting by batch size matters)."
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(k, *shape, generator=g, dtype=f64), torch.randint(0, classes, (k,), generator=g)) for k in n]


def exact_hessian(model, batches, names=None, at=None):
    "The Hessian of the mean cross-entropy over all examples, by `torch.func.hessian` of the flat weights (BN in eval mode)."
    fixed = {n: t.detach() for n, t in (*model.named_parameters(), *model.named_buffers())}
    if at is not None: fixed.update(at)
    names = names or [n for n, _ in model.named_parameters()]
    shapes = [fixed[n].shape for n in names]
    x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    def loss(w):
        p = {n: c.reshape(s) for n, c, s in zip(names, w.split([s.numel() for s in shapes]), shapes)}
        return F.cross_entropy(functional_call(model, {**fixed, **p}, (x,)), y)
    was = model.training
    model.eval()
    try: return torch.func.hessian(loss)(torch.cat([fixed[n].reshape(-1) for n in names]))
    finally: model.train(was)


class Diag:
    "A diagonal operator with the interface `lanczos` needs."
    def __init__(self, d): self.d, self.dim, self.dtype, self.device, self.num_hvps = d, len(d), d.dtype, d.device, 0
    def matmat(self, V): self.num_hvps += len(V); return V * self.d


# ---------------------------------------------------------------- Hessian-vector products

def test_hvp_equals_exact_hessian_mlp():
    net, batches = mlp(), data((5,))
    op, H = HessianOperator(net, batches), exact_hessian(net, batches)
    assert op.dim == H.shape[0] == sum(p.numel() for p in net.parameters())
    V = torch.randn(4, op.dim, dtype=f64)
    torch.testing.assert_close(op.matmat(V), V @ H, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(op @ V[0], H @ V[0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(op.to_dense(block=5), H, rtol=1e-10, atol=1e-12)
    assert op.method == 'func'


def test_hvp_equals_exact_hessian_conv_bn_in_eval_mode():
    net, batches = conv_bn(), data((2, 6, 6), classes=4)
    stats = {n: b.clone() for n, b in net.named_buffers()}
    op = HessianOperator(net, batches)
    torch.testing.assert_close(op.to_dense(), exact_hessian(net, batches), rtol=1e-10, atol=1e-12)
    assert net.training                                                   # the model's mode is restored
    for n, b in net.named_buffers(): assert torch.equal(b, stats[n])      # and its running statistics untouched


def test_masked_hvp_is_the_submatrix_at_the_masked_weights():
    net, batches = mlp(), data((5,))
    g = torch.Generator().manual_seed(3)
    mask = Mask({'0.weight': torch.rand(7, 5, generator=g) < 0.5, '2.weight': torch.rand(3, 7, generator=g) < 0.5})
    op = HessianOperator(net, batches, mask=mask)
    keep = torch.cat([mask[n].reshape(-1) if n in mask else torch.ones(p.numel(), dtype=torch.bool) for n, p in net.named_parameters()])
    at = {n: p.detach() * mask[n] for n, p in net.named_parameters() if n in mask}
    H = exact_hessian(net, batches, at=at)
    assert op.dim == int(keep.sum()) < len(keep)
    torch.testing.assert_close(op.to_dense(), H[keep][:, keep], rtol=1e-10, atol=1e-12)
    # round trip between flat kept coordinates and parameter-shaped tensors, zero at pruned coordinates
    v = torch.randn(op.dim, dtype=f64)
    d = op.unflatten(v)
    assert all(not d[n][~mask[n]].any() for n in mask)
    torch.testing.assert_close(op.flatten(d), v)


def test_prunable_params_only():
    net, batches = mlp(), data((5,))
    op = HessianOperator(net, batches, params='prunable')
    assert op.names == ['0.weight', '2.weight']
    full = exact_hessian(net, batches)
    sel = torch.cat([torch.full((p.numel(),), n in op.names) for n, p in net.named_parameters()])
    torch.testing.assert_close(op.to_dense(), full[sel][:, sel], rtol=1e-10, atol=1e-12)


def test_double_backward_equals_func():
    for net, batches in [(mlp(), data((5,))), (conv_bn(), data((2, 6, 6), classes=4))]:
        V = torch.randn(3, sum(p.numel() for p in net.parameters()), dtype=f64)
        ref = HessianOperator(net, batches, method='func').matmat(V)
        torch.testing.assert_close(HessianOperator(net, batches, method='double_backward').matmat(V), ref, rtol=1e-10, atol=1e-12)
        cached = HessianOperator(net, batches, method='double_backward', cache_graph=True)
        for _ in range(2): torch.testing.assert_close(cached.matmat(V), ref, rtol=1e-10, atol=1e-12)


class _OldSquare(torch.autograd.Function):      # old style (no setup_context): torch.func cannot trace it
    @staticmethod
    def forward(ctx, x): ctx.save_for_backward(x); return x * x
    @staticmethod
    def backward(ctx, g): x, = ctx.saved_tensors; return 2 * x * g

class _Square(nn.Module):
    def forward(self, x): return _OldSquare.apply(x)


def test_auto_falls_back_to_double_backward():
    torch.manual_seed(0)
    net, batches = nn.Sequential(nn.Linear(5, 4), _Square(), nn.Linear(4, 3)).to(f64), data((5,))
    op = HessianOperator(net, batches)
    with pytest.warns(RuntimeWarning, match='torch.func failed'): Hd = op.to_dense()
    assert op.method == 'double_backward'
    with pytest.raises(RuntimeError, match='setup_context'): HessianOperator(net, batches, method='func').to_dense()
    # the same network written with a plain square, through torch.func
    plain = nn.Sequential(net[0], nn.Identity(), net[2])
    class Sq(nn.Module):
        def forward(self, x): return x * x
    plain[1] = Sq()
    torch.testing.assert_close(Hd, HessianOperator(plain, batches, method='func').to_dense(), rtol=1e-10, atol=1e-12)


def test_float32_default_and_float64_option():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    batches = [(x.float(), y) for x, y in data((5,))]
    op32, op64 = HessianOperator(net, batches), HessianOperator(net, batches, dtype=f64)
    assert (op32.dtype, op64.dtype, next(net.parameters()).dtype) == (torch.float32, f64, torch.float32)
    torch.testing.assert_close(op32.to_dense().double(), op64.to_dense(), rtol=1e-4, atol=1e-5)


def test_image_data_and_subsample():
    train, _ = load_dataset('synthetic', n_train=40, shape=(1, 4, 4))
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    op = HessianOperator(net, train, examples=24, seed=5, batch_size=10)
    assert (op.num_examples, [len(y) for _, y in op.batches]) == (24, [10, 10, 4])
    again = HessianOperator(net, train, examples=24, seed=5, batch_size=24)
    torch.testing.assert_close(op.to_dense(), again.to_dense(), rtol=1e-5, atol=1e-6)   # batching does not change H


def test_bad_input_names_the_choices():
    net, batches = mlp(), data((5,))
    with pytest.raises(ValueError, match='trainable, prunable'): HessianOperator(net, batches, params='all')
    with pytest.raises(ValueError, match='auto, func, double_backward'): HessianOperator(net, batches, method='hessian')
    with pytest.raises(ValueError, match='unknown parameters'): HessianOperator(net, batches, params=['fc.weight'])
    with pytest.raises(ValueError, match='not among'):
        HessianOperator(net, batches, params='prunable', mask=Mask({'0.bias': torch.ones(7, dtype=torch.bool)}))
    with pytest.raises(ValueError, match='no data'): HessianOperator(net, [])
    with pytest.raises(ValueError, match=r"\(b, 66\)"): HessianOperator(net, batches).matmat(torch.zeros(2, 3))


# ---------------------------------------------------------------- Lanczos, eigsh, Hutchinson, SLQ

@pytest.fixture(scope='module')
def mlp_op():
    net, batches = mlp(), data((5,))
    op = HessianOperator(net, batches)
    return op, exact_hessian(net, batches)


def test_lanczos_top_k_equals_eigvalsh(mlp_op):
    op, H = mlp_op
    exact = torch.linalg.eigvalsh(H).flip(0).numpy()
    top = top_eigenvalues(op, k=5)
    np.testing.assert_allclose(top.eigenvalue, exact[:5], rtol=1e-6)
    assert top.converged.all() and top.attrs['iterations'] < op.dim and top.attrs['hvps'] == top.attrs['iterations']
    assert (top.error_bound.to_numpy() >= np.abs(top.eigenvalue.to_numpy() - exact[:5]) - 1e-12).all()   # the bounds hold
    lm = exact[np.argsort(-np.abs(exact), kind='stable')[:4]]
    np.testing.assert_allclose(top_eigenvalues(op, k=4, which='LM').eigenvalue, lm, rtol=1e-6)
    full = top_eigenvalues(op, k=op.dim, iters=op.dim)                   # the whole spectrum
    np.testing.assert_allclose(full.eigenvalue, exact, rtol=1e-6, atol=1e-10)


def test_lanczos_restarts_give_multiplicities():
    d = torch.tensor([3., 3., 3., 2., 1., 1., 0., -4.], dtype=f64)
    alpha, beta = lanczos(Diag(d), 8, rademacher(2, 8, 0, dtype=f64))
    assert alpha.shape == beta.shape == (2, 8)
    for a, b in zip(alpha, beta):
        from scipy.linalg import eigvalsh_tridiagonal
        np.testing.assert_allclose(eigvalsh_tridiagonal(a, b[:-1]), np.sort(d.numpy()), atol=1e-12)
    np.testing.assert_allclose(top_eigenvalues(Diag(d), k=8, iters=8).eigenvalue, d.numpy(), atol=1e-12)


def test_eigsh_cross_check_agrees(mlp_op):
    op, H = mlp_op
    exact = torch.linalg.eigvalsh(H).flip(0).numpy()
    np.testing.assert_allclose(eigsh_eigenvalues(op, k=4).eigenvalue, exact[:4], rtol=1e-8)
    L = as_linear_operator(op)
    M = np.random.default_rng(0).standard_normal((op.dim, 2))
    np.testing.assert_allclose(L @ M, H.numpy() @ M, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match='eigsh needs'): eigsh_eigenvalues(op, k=op.dim)
    with pytest.raises(ValueError, match='LA, LM'): top_eigenvalues(op, k=2, which='SM')


def test_hutchinson_trace_within_its_error(mlp_op):
    op, H = mlp_op
    tr = hutchinson_trace(op, probes=60, block=7)
    assert tr.probes[0] == 60 and tr.dim[0] == op.dim and tr.std_error[0] > 0
    assert abs(tr.trace[0] - H.trace().item()) < 3 * tr.std_error[0]
    assert hutchinson_trace(op, probes=60, block=60).trace[0] == pytest.approx(tr.trace[0], rel=1e-12)   # blocks change nothing


def test_slq_density_integrates_to_one_and_its_mean_is_the_trace_over_D(mlp_op):
    op, H = mlp_op
    quad = slq_quadrature(op, probes=12, iters=20, block=5)
    assert quad.probe.nunique() == 12
    np.testing.assert_allclose(quad.groupby('probe').weight.sum(), 1, rtol=1e-12)
    dens = spectral_density(op, probes=12, iters=20, block=5)
    t, p = dens.eigenvalue.to_numpy(), dens.density.to_numpy()
    dt = t[1] - t[0]
    assert p.sum() * dt == pytest.approx(1, abs=1e-3)
    mean = (t * p).sum() * dt
    assert mean == pytest.approx((quad.node * quad.weight).sum() / 12, rel=1e-6)
    per_probe = quad.assign(m=quad.node * quad.weight).groupby('probe').m.sum()   # v̂ᵀHv̂, mean tr(H)/D
    assert abs(mean - H.trace().item() / op.dim) < 3 * per_probe.std() / np.sqrt(12)


def test_slq_quadrature_is_exact_on_a_full_krylov_space(mlp_op):
    op, H = mlp_op
    quad = slq_quadrature(op, probes=1, iters=op.dim)
    v = rademacher(1, op.dim, 0, 'slq', dtype=f64)[0]; v = v / v.norm()
    for power in (1, 2, 3):   # Gauss quadrature with all nodes: Σ τ θᵖ = v̂ᵀHᵖv̂
        assert (quad.weight * quad.node**power).sum() == pytest.approx((v @ torch.linalg.matrix_power(H, power) @ v).item(), rel=1e-8)
    with pytest.raises(ValueError, match='sigma must be positive'): gaussian_density(quad, sigma=-1.)


# ---------------------------------------------------------------- Lemma 3.1

def test_intersection_threshold_by_hand():
    # λ = (1, 4, 9), ε = 2, R = 2: r² = 2ε/λ = (4, 1, 4/9); r²/(R²+r²) = (1/2, 1/5, 1/10); d* = 3 − 0.8
    assert intersection_threshold([1., 4., 9.], eps=2., R=2.) == pytest.approx(2.2, rel=1e-12)
    assert max_pruning_ratio([1., 4., 9.], eps=2., R=2.) == pytest.approx(0.8 / 3, rel=1e-12)
    # a fourth, flat direction (λ = 0, negative, or not computed) adds 1 to the sum and nothing to d*
    for lam, D in [([1., 4., 9., 0.], None), ([1., 4., 9., -3.], None), ([1., 4., 9.], 4)]:
        assert intersection_threshold(lam, 2., 2., D) == pytest.approx(2.2, rel=1e-12)
        assert max_pruning_ratio(lam, 2., 2., D) == pytest.approx(1.8 / 4, rel=1e-12)
    # R = 0 (already at the minimum): every subspace intersects; R → ∞: none below the full dimension
    np.testing.assert_allclose(intersection_threshold([1., 4., 9.], 2., np.array([0., 1e9])), [0., 3.], atol=1e-9)
    # SLQ-style weights: nodes standing for D·w eigenvalues
    assert intersection_threshold([1., 9.], 2., 2., D=4, weights=[3, 1]) == \
        pytest.approx(intersection_threshold([1., 1., 1., 9.], 2., 2.), rel=1e-12)
    with pytest.raises(ValueError, match='eps must be positive'): intersection_threshold([1.], 0., 1.)
    with pytest.raises(ValueError, match='pass D'): intersection_threshold([1.], 1., 1., weights=[1.])


class Quadratic(nn.Module):
    "A model whose 'loss' is ½ wᵀ diag(λ) w: its Hessian is diag(λ)."
    def __init__(self, lam):
        super().__init__()
        self.register_buffer('lam', torch.as_tensor(lam, dtype=f64))
        self.w = nn.Parameter(torch.ones(len(lam), dtype=f64))
    def forward(self, x): return 0.5 * (self.lam * self.w**2).sum() + 0 * x.sum()


def test_intersection_threshold_of_a_quadratic_loss_end_to_end():
    model = Quadratic([9., 1., 4.])
    op = HessianOperator(model, [(torch.zeros(1, dtype=f64), torch.zeros(1))], loss_fn=lambda out, y: out)
    top = top_eigenvalues(op, k=3)
    np.testing.assert_allclose(top.eigenvalue, [9., 4., 1.], rtol=1e-10)
    assert intersection_threshold(top.eigenvalue, eps=2., R=2.) == pytest.approx(2.2, rel=1e-9)
    # the same from the SLQ quadrature over the full Krylov space
    quad = slq_quadrature(op, probes=2, iters=3)
    assert intersection_threshold(quad.node, 2., 2., D=op.dim, weights=quad.weight) == pytest.approx(2.2, rel=1e-9)


# ---------------------------------------------------------------- curvlinops (dev extra)

def test_matches_curvlinops():
    curvlinops = pytest.importorskip('curvlinops')
    for net, batches in [(mlp(), data((5,))), (conv_bn(), data((2, 6, 6), classes=4))]:
        net.eval()   # curvlinops calls the model as it is; ours uses eval mode for BatchNorm
        H = curvlinops.HessianLinearOperator(net, nn.CrossEntropyLoss(), list(net.parameters()), batches)
        L = H.to_scipy() if hasattr(H, 'to_scipy') else H
        M = np.random.default_rng(0).standard_normal((L.shape[0], 3))
        ours = as_linear_operator(HessianOperator(net, batches)) @ M
        np.testing.assert_allclose(L @ M, ours, rtol=1e-9, atol=1e-11)
