#!/usr/bin/env python
"""Time the Hessian spectrum of a ResNet-20 on CIFAR-10 images (the top-k eigenvalues and an SLQ density): ticketlab
against PyHessian's method, side by side in one run.

ticketlab:  `ticketlab.hessian.HessianOperator` (products by `--method`, default 'auto' = torch.func forward-over-reverse,
            `vmap`ped over a block of vectors); `top_eigenvalues` (Lanczos with full reorthogonalisation, stopping when the
            error bound of each of the top k Ritz values is below `--tol` times its size; which='LM', the eigenvalues of
            largest magnitude, as power iteration finds); `slq_quadrature` (`--probes` Rademacher probes of `--iters` Lanczos
            steps, `--block` probes stepped together: one product call per step for the whole block). `--method
            double_backward --cache-graph` keeps each batch's gradient graph instead (fastest per product on a CPU).
reference:  PyHessian's algorithms (Yao et al. 2020; the package itself fails on torch >= 2), re-implemented: products by
            double backward (`autograd.grad` of the `create_graph` gradient); with one data batch the gradient graph is built
            once and kept (PyHessian's `data=` mode), with several it is rebuilt for each product (its `dataloader=` mode).
            Top-k: power iteration from a random vector, Gram-Schmidt-deflated against the eigenvectors already found, until
            the relative change of the Rayleigh quotient is below `--tol` (PyHessian's 1e-3) or `--max-iter` (its 100)
            iterations, one eigenvalue after another. Density: Lanczos with full reorthogonalisation, one probe after
            another, from the same probe vectors as ticketlab (so the two quadratures must agree to rounding).

Both take the Hessian of the mean cross-entropy over the same images, in all trainable parameters, BatchNorm in eval mode,
float32. The network is an untrained ResNet-20 (He initialisation, seed `--seed`) whose BatchNorm running statistics are
estimated on the same images (without them eval-mode BatchNorm of a fresh network is meaningless). Order: ticketlab top-k,
reference top-k, reference density, ticketlab density (ABBA), so that a change in the machine's load hits both alike.

Accuracy: the top-k of both are compared with a certified reference, Lanczos run (untimed) until every error bound is
below `--check-tol` relative (a Ritz value with residual r lies within r of an eigenvalue); the two densities with each
other. The last line printed is `ratio: X.XX` = reference time / ticketlab time for the whole spectrum.

Memory: ticketlab's SLQ holds `--block` x `--iters` x D numbers of Krylov basis and `--block` tangents of a batch's
activations; the reference keeps the gradient graph of one batch. The defaults suit a GPU; on a CPU lower `--images`
(or `--batch-size`) and `--block`.

    /work/venv/bin/python benchmarks/hessian_spectrum.py                      # the issue's setting: 1,000 images, top-20, 100 nodes
    /work/venv/bin/python benchmarks/hessian_spectrum.py --images 32 --topk 5 --iters 20 --threads 1    # minutes on a CPU
"""
from __future__ import annotations
import argparse, sys, time
from pathlib import Path

import numpy as np, torch, torch.nn.functional as F
from scipy.linalg import eigh_tridiagonal

from ticketlab.core import make_generator, seed_all
from ticketlab.data import load_dataset
from ticketlab.loader import eval_batches
from ticketlab.models import get_model
from ticketlab.hessian import HessianOperator, gaussian_density, rademacher, slq_quadrature, top_eigenvalues
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_device_args, cifar10_or_skip, machine, pick_device, sync  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog='hessian_spectrum', description=__doc__.split('\n')[0])
    p.add_argument('--images', type=int, default=1000, help='CIFAR-10 training images the loss is taken over (default 1000)')
    p.add_argument('--topk', type=int, default=20, help='top eigenvalues (default 20)')
    p.add_argument('--iters', type=int, default=100, help='Lanczos steps (quadrature nodes) per SLQ probe (default 100)')
    p.add_argument('--probes', type=int, default=10, help='SLQ probes (default 10, ticketlab\'s default)')
    p.add_argument('--block', type=int, default=10, help='probes ticketlab steps together (default 10)')
    p.add_argument('--batch-size', type=int, default=1000, help='images per forward pass, both pipelines (default 1000)')
    p.add_argument('--tol', type=float, default=1e-3, help='accuracy of the top-k: PyHessian\'s tol, ticketlab\'s relative error bound (default 1e-3)')
    p.add_argument('--max-iter', type=int, default=100, help='power iterations per eigenvalue at most (PyHessian\'s maxIter, default 100)')
    p.add_argument('--check-tol', type=float, default=1e-6, help='error bound of the untimed certified top-k (default 1e-6)')
    p.add_argument('--no-check', action='store_true', help='skip the certified top-k')
    p.add_argument('--method', default='auto', choices=('auto', 'func', 'double_backward'), help="ticketlab's products (default auto)")
    p.add_argument('--cache-graph', action='store_true', help="ticketlab double_backward: keep each batch's gradient graph (memory!)")
    add_device_args(p)
    p.add_argument('--seed', type=int, default=0, help='seed of the network, the images and the start vectors (default 0)')
    a = p.parse_args(argv)
    if not 1 <= a.images <= 50000: p.error('--images must be in [1, 50000]')
    if min(a.topk, a.iters, a.probes, a.block, a.batch_size, a.max_iter) < 1: p.error('counts must be >= 1')
    return a


# ---------------------------------------------------------------- the reference: PyHessian's algorithms

class PyHessianReference:
    "PyHessian's Hessian-vector products, power iteration and SLQ (Yao et al. 2020), on a list of parameter tensors."
    def __init__(self, model, batches):
        self.model, self.batches = model.eval(), batches
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.n = sum(len(y) for _, y in batches)
        self.hvps, self.gradsH = 0, None

    def hv(self, v):
        self.hvps += 1
        if len(self.batches) == 1:      # PyHessian's `data=` mode: one gradient graph, built once, kept for every product
            if self.gradsH is None:
                x, y = self.batches[0]
                self.gradsH = torch.autograd.grad(F.cross_entropy(self.model(x), y), self.params, create_graph=True)
            return list(torch.autograd.grad(self.gradsH, self.params, grad_outputs=v, retain_graph=True))
        out = [torch.zeros_like(p) for p in self.params]     # `dataloader=` mode: rebuilt per batch and product
        for x, y in self.batches:
            g = torch.autograd.grad(F.cross_entropy(self.model(x), y), self.params, create_graph=True)
            hv = torch.autograd.grad(g, self.params, grad_outputs=v)
            for o, h in zip(out, hv): o.add_(h, alpha=len(y) / self.n)
        return out

    @staticmethod
    def dot(a, b): return sum((x * y).sum() for x, y in zip(a, b))
    @classmethod
    def normalise(cls, v):
        s = cls.dot(v, v).sqrt()
        return [x / (s + 1e-6) for x in v]
    @classmethod
    def orthonormal(cls, w, vs):
        for v in vs: w = [a - cls.dot(w, v) * b for a, b in zip(w, v)]
        return cls.normalise(w)

    def eigenvalues(self, top_n, max_iter=100, tol=1e-3, seed=0):
        "Power iteration with deflation, one eigenvalue after another (PyHessian's `eigenvalues`)."
        g, vals, vecs = make_generator(seed, 'power'), [], []
        for _ in range(top_n):
            lam = None
            v = self.normalise([torch.randn(p.shape, generator=g).to(p) for p in self.params])
            for _ in range(max_iter):
                v = self.orthonormal(v, vecs)
                Hv = self.hv(v)
                tmp = self.dot(Hv, v).item()
                v = self.normalise(Hv)
                if lam is not None and abs(lam - tmp) / (abs(lam) + 1e-6) < tol: lam = tmp; break
                lam = tmp
            vals.append(lam); vecs.append(v)
        return vals

    def density_quadrature(self, v0s, iters):
        "SLQ, one probe after another (PyHessian's `density`, with full reorthogonalisation): nodes and weights per probe."
        out = []
        for flat in v0s:
            v = self.normalise(list(torch.split(flat, [p.numel() for p in self.params])))
            v = [a.view_as(p) for a, p in zip(v, self.params)]
            vs, alphas, betas = [v], [], []
            for i in range(iters):
                if i:
                    beta = self.dot(w, w).sqrt(); betas.append(beta.item())
                    v = self.orthonormal(w, vs); vs.append(v)
                Hv = self.hv(v)
                alpha = self.dot(Hv, v); alphas.append(alpha.item())
                w = [h - alpha * a - (beta * b if i else 0) for h, a, b in zip(Hv, v, vs[-2] if i else v)]
            theta, S = eigh_tridiagonal(np.array(alphas), np.array(betas))
            out.append((theta, S[0]**2))
        return out


# ---------------------------------------------------------------- the run

def main(argv=None):
    a = parse_args(argv)
    root = cifar10_or_skip('hessian_spectrum')
    if root is None: return
    device = pick_device(a, 'hessian_spectrum')
    print(machine(device))
    train, _ = load_dataset('cifar10', root=root)
    pick = torch.randperm(len(train), generator=make_generator(a.seed, 'hessian_spectrum'))[:a.images].sort().values
    data = train.subset(pick)
    seed_all(a.seed)
    model = get_model('resnet20').to(device)
    batches = list(eval_batches(data, a.batch_size, device))
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d): m.reset_running_stats(); m.momentum = None   # cumulative average
    with torch.no_grad():
        for x, _ in batches: model(x)
    model.eval()
    op = HessianOperator(model, batches, method=a.method, cache_graph=a.cache_graph)
    ref = PyHessianReference(model, batches)
    D = op.dim
    op.matvec(torch.ones(D, device=device))          # warm-up (kernel selection), untimed, for both pipelines
    F.cross_entropy(model(batches[0][0]), batches[0][1]).backward(); model.zero_grad(set_to_none=True)
    print(f'ResNet-20 (untrained, BatchNorm statistics of the images), {a.images} CIFAR-10 training images in {len(batches)} '
          f'batch(es) of <= {a.batch_size}; D = {D:,} parameters; top-{a.topk} (tol {a.tol:g}, power iteration <= {a.max_iter} '
          f'iterations each), SLQ {a.probes} probes x {a.iters} nodes (ticketlab block {a.block})', flush=True)

    t, hv = {}, {}
    def timed(name, fn, counter):
        sync(device); n0, t0 = counter(), time.perf_counter()
        out = fn()
        sync(device); t[name], hv[name] = time.perf_counter() - t0, counter() - n0
        print(f'  {name:<16} {t[name]:9.1f} s  {hv[name]:6d} HVPs  {hv[name] / t[name]:7.2f} HVPs/s', flush=True)
        return out
    ours_n, ref_n = (lambda: op.num_hvps), (lambda: ref.hvps)
    top = timed('ticketlab top-k', lambda: top_eigenvalues(op, k=a.topk, tol=a.tol, seed=a.seed, which='LM'), ours_n)
    power = timed('reference top-k', lambda: ref.eigenvalues(a.topk, a.max_iter, a.tol, a.seed), ref_n)
    v0s = rademacher(a.probes, D, a.seed, 'slq', dtype=op.dtype, device=device)
    rquad = timed('reference SLQ', lambda: ref.density_quadrature(v0s, a.iters), ref_n)
    quad = timed('ticketlab SLQ', lambda: slq_quadrature(op, a.probes, a.iters, a.seed, a.block), ours_n)
    print(f'ticketlab products by {op.method}' + (' (gradient graphs kept)' if a.cache_graph else ''))

    # accuracy
    ours_k, ref_k = top.eigenvalue.to_numpy(), np.array(sorted(power, key=lambda v: -abs(v)))
    if not a.no_check:
        cert = top_eigenvalues(op, k=a.topk, tol=a.check_tol, seed=a.seed + 1, which='LM', iters=max(200, 15 * a.topk))
        truth = cert.eigenvalue.to_numpy()
        print(f'certified top-{a.topk} (untimed): {cert.attrs["iterations"]} Lanczos steps, max relative error bound '
              f'{(cert.error_bound / cert.eigenvalue.abs()).max():.1e}, all converged: {bool(cert.converged.all())}')
        err = lambda v: np.abs(v - truth) / np.abs(truth)
        print(f'top-{a.topk} max relative error: ticketlab {err(ours_k).max():.2e}, reference {err(ref_k).max():.2e} '
              f'(median {np.median(err(ours_k)):.1e} vs {np.median(err(ref_k)):.1e})')
    print('top eigenvalues, ticketlab:', np.array2string(ours_k[:min(a.topk, 10)], precision=3))
    print('top eigenvalues, reference:', np.array2string(ref_k[:min(a.topk, 10)], precision=3))
    rnodes = np.concatenate([q[0] for q in rquad]); rw = np.concatenate([q[1] for q in rquad])
    import pandas as pd
    rq = pd.DataFrame(dict(probe=np.repeat(np.arange(len(rquad)), [len(q[0]) for q in rquad]), node=rnodes, weight=rw))
    grid = np.linspace(min(rnodes.min(), quad.node.min()), max(rnodes.max(), quad.node.max()), 2000)
    d1, d2 = gaussian_density(quad, grid=grid), gaussian_density(rq, grid=grid)
    dgrid = grid[1] - grid[0]
    print(f'SLQ densities: L1 distance {np.abs(d1.density - d2.density).sum() * dgrid:.1e}; trace estimate D*mean(node) '
          f'ticketlab {D * (quad.node * quad.weight).sum() / a.probes:.1f}, reference {D * (rnodes * rw).sum() / a.probes:.1f}; '
          f'lambda_max {quad.node.max():.2f} vs {rnodes.max():.2f}')

    tt, tr = t['ticketlab top-k'] + t['ticketlab SLQ'], t['reference top-k'] + t['reference SLQ']
    ht, hr = hv['ticketlab top-k'] + hv['ticketlab SLQ'], hv['reference top-k'] + hv['reference SLQ']
    print(f'top-k: ticketlab {t["ticketlab top-k"]:.1f} s, reference {t["reference top-k"]:.1f} s, ratio {t["reference top-k"] / t["ticketlab top-k"]:.2f}')
    print(f'SLQ:   ticketlab {t["ticketlab SLQ"]:.1f} s, reference {t["reference SLQ"]:.1f} s, ratio {t["reference SLQ"] / t["ticketlab SLQ"]:.2f}')
    print(f'HVPs/s: ticketlab {ht / tt:.2f} ({ht} HVPs), reference {hr / tr:.2f} ({hr} HVPs)')
    print(f'spectrum: ticketlab {tt:.1f} s, reference {tr:.1f} s')
    print(f'ratio: {tr / tt:.2f}')


if __name__ == '__main__':
    main()
