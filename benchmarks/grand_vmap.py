#!/usr/bin/env python
"""Time GraNd scores (per-example loss-gradient norms) on CIFAR-10 images: `torch.func.vmap` against a per-example
Python loop, side by side in one run.

vmap: `ticketlab.el2n.grad_norms`: `vmap(grad(loss))` of a `functional_call` over a batch of `--batch-size` examples,
      one batched forward and backward per batch (BatchNorm in eval mode, float32).
loop: `ticketlab.el2n._grand_loop`: the conventional way, one forward and one `torch.autograd.grad` per example
      (BatchNorm in eval mode, float32).

Both compute the norm of the gradient of each example's cross-entropy loss with respect to all the network's parameters;
the script checks that they agree. The examples are split into `--rounds` chunks that alternate between the two (ABBA
order), so that a change in the machine's load hits both alike; both first run an untimed warm-up (the first `vmap`
imports torch._dynamo, several seconds). The network is a fresh initialisation: the cost does not depend on the weights.
The last line printed is `ratio: X.XX` = vmap examples/s ÷ loop examples/s.

    /work/venv/bin/python benchmarks/grand_vmap.py                         # ResNet-20 at width 0.5, 512 images
    /work/venv/bin/python benchmarks/grand_vmap.py --threads 1 --n 256     # on a shared machine
"""
from __future__ import annotations
import argparse, sys, time
from pathlib import Path

import numpy as np, torch

from ticketlab.core import seed_all
from ticketlab.data import load_dataset
from ticketlab.models import get_model, model_names
from ticketlab.el2n import grad_norms, _grand_loop
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import abba, add_device_args, cifar10_or_skip, load_average, machine, pick_device, sync  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog='grand_vmap', description=__doc__.split('\n')[0])
    p.add_argument('--n', type=int, default=512, help='training images scored (default 512)')
    p.add_argument('--model', default='resnet20', choices=model_names(), metavar='MODEL', help='architecture (default resnet20)')
    p.add_argument('--width', type=float, default=0.5, help='width multiplier (default 0.5)')
    p.add_argument('--batch-size', type=int, default=64, help='examples per vmapped batch (default 64)')
    p.add_argument('--rounds', type=int, default=4, help='alternating rounds the examples are split into (default 4)')
    add_device_args(p)
    a = p.parse_args(argv)
    if not 1 <= a.n <= 50000: p.error('--n must be in [1, 50000]')
    if a.batch_size < 1 or a.rounds < 1: p.error('--batch-size and --rounds must be >= 1')
    a.rounds = min(a.rounds, a.n)
    return a


def main(argv=None):
    args = parse_args(argv)
    src = cifar10_or_skip('grand_vmap')
    if src is None: return
    device = pick_device(args, 'grand_vmap')
    train, _ = load_dataset('cifar10', root=src)   # decoded once, then cached as uint8 under ticketlab_home()/cache
    data = train.subset(torch.arange(args.n))
    seed_all(0)
    net = get_model(args.model, data.num_classes, data.shape, width=args.width).to(device)
    nparams = sum(p.numel() for p in net.parameters())
    chunks = np.array_split(np.arange(args.n), args.rounds)

    print(machine(device))
    print(f'GraNd of {args.n} CIFAR-10 training images, {args.model} at width {args.width:g} ({nparams:,} parameters, all differentiated), '
          f'float32, BatchNorm in eval mode, {args.rounds} alternating rounds')
    print(f'vmap: ticketlab.el2n.grad_norms, torch.func.vmap(grad(functional_call)) over batches of {args.batch_size}')
    print(f'loop: ticketlab.el2n._grand_loop, one forward + torch.autograd.grad per example')

    warm = data.subset(torch.arange(min(args.n, args.batch_size)))      # untimed: dynamo import, oneDNN kernels
    grad_norms(net, warm, args.batch_size, device); _grand_loop(net, warm.subset(torch.arange(min(len(warm), 8))), device=device)

    print(f'load average before: {load_average()}')
    t, res = {'vmap': 0.0, 'loop': 0.0}, {'vmap': {}, 'loop': {}}
    for r, idx in enumerate(chunks):
        chunk = data.subset(torch.from_numpy(idx))
        for k in abba(['vmap', 'loop'], r):
            sync(device); t0 = time.perf_counter()
            out = (grad_norms(net, chunk, args.batch_size, device).double().numpy() if k == 'vmap'
                   else _grand_loop(net, chunk, device=device))
            sync(device); t[k] += time.perf_counter() - t0
            res[k][r] = out
    print(f'load average after:  {load_average()}')
    v, l = (np.concatenate([res[k][r] for r in range(len(chunks))]) for k in ('vmap', 'loop'))
    print(f'agreement: max relative difference {np.max(np.abs(v - l) / np.maximum(l, 1e-12)):.1e} '
          f'(GraNd of the first examples: {", ".join(f"{x:.4f}" for x in v[:3])})')
    speed = {k: args.n / t[k] for k in t}
    for k in ('vmap', 'loop'): print(f'{k + ":":6s}{t[k]:8.2f} s   {speed[k]:8.1f} examples/s')
    print(f'ratio: {speed["vmap"] / speed["loop"]:.2f}')


if __name__ == '__main__': main()
