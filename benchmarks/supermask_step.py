#!/usr/bin/env python
"""Step time of an edge-popup supermask against the same network trained normally, side by side in one run.

dense:       `get_model(model)` trained by `ticketlab.train.Trainer` under the paper's CIFAR-10 settings (SGD, momentum 0.9,
             weight decay 1e-4, batch 128, pad-4 crop + flip) — every weight learns.
supermask:   the same network and initial weights through `ticketlab.edgepopup.supermask_model(density=k)`, the same
             Trainer and settings: the weights are frozen, each prunable layer recomputes its top-k% mask of |scores|
             every forward pass (`topk_mask`: `torch.kthvalue` threshold, exact count, ties by index) and the scores
             learn through the straight-through gradient.
alg1-sort:   (with --sort) the supermask with the mask computed as Algorithm 1 of the paper does, a full sort of each
             layer's scores (stable, so that it picks the same weights).

The timed steps are split into rounds that alternate between the pipelines (ABBA order), every step is timed on
its own and the median step time is reported (robust to bursts of other processes' load). Separately, the mask
computation alone (all layers, one step's worth) is timed for three selectors: kthvalue (ticketlab), sort (Algorithm
1), torch.topk. The last line printed is `ratio: X.XX` = supermask median step time / dense median step time
(the goal is at most 1.3), measured in this process's cpu time when it runs one thread on a cpu (immune to waiting
for a core that other jobs hold, which is most of the wall time on a loaded machine), else in wall time; both are printed.

    /work/venv/bin/python benchmarks/supermask_step.py --threads 1          # Conv-6, batch 128, 12 timed steps each
    /work/venv/bin/python benchmarks/supermask_step.py --threads 1 --sort   # also Algorithm 1's sort
"""
from __future__ import annotations
import argparse, sys, time
from pathlib import Path
import numpy as np, torch

import ticketlab.edgepopup as ep
from ticketlab.core import resolve_precision, seed_all
from ticketlab.data import load_dataset
from ticketlab.edgepopup import kept_count, supermask_model, supermask_train_hparams, topk_mask
from ticketlab.models import get_model, model_names, prunable_parameters
from ticketlab.train import Trainer
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import StepTimer, abba, add_device_args, cifar10_or_skip, load_average, machine, pick_device, sync  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog='supermask_step', description=__doc__.split('\n')[0])
    p.add_argument('--model', default='conv6', choices=model_names(), metavar='MODEL', help='architecture (default conv6)')
    p.add_argument('--density', type=float, default=0.5, help='k, the fraction of weights the supermask keeps (default 0.5)')
    p.add_argument('--batch-size', type=int, default=128, help='examples per step (default 128, the paper\'s CIFAR-10 batch)')
    p.add_argument('--steps', type=int, default=12, help='timed steps per pipeline (default 12)')
    p.add_argument('--warmup', type=int, default=2, help='untimed steps per pipeline first (default 2)')
    p.add_argument('--rounds', type=int, default=4, help='alternating rounds the timed steps are split into (default 4)')
    p.add_argument('--precision', default='auto', choices=('auto', 'fp32', 'bf16'), help='Trainer precision (default auto)')
    add_device_args(p)
    p.add_argument('--sort', action='store_true', help="also time the supermask with Algorithm 1's full sort")
    p.add_argument('--topk-reps', type=int, default=15, help='repetitions of the mask-only timing per selector (default 15)')
    a = p.parse_args(argv)
    for k in ('steps', 'rounds', 'batch_size', 'threads', 'topk_reps'):
        if getattr(a, k) is not None and getattr(a, k) < 1: p.error(f'--{k.replace("_", "-")} must be >= 1')
    if not 0 < a.density <= 1: p.error('--density must be in (0, 1]')
    a.rounds = min(a.rounds, a.steps)
    return a


def sort_mask(scores, density):
    "Algorithm 1's GetSubnet: sort the layer's scores, zero the smallest j (stable sort, exact count)."
    flat = scores.detach().reshape(-1)
    j = flat.numel() - kept_count(flat.numel(), density)
    keep = torch.ones(flat.numel(), dtype=torch.bool, device=flat.device)
    keep[flat.sort(stable=True).indices[:j]] = False
    return keep.reshape(scores.shape)


def torch_topk_mask(scores, density):
    "torch.topk's indices scattered into a mask (ties: whichever topk returns)."
    flat = scores.detach().reshape(-1)
    keep = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    keep[flat.topk(kept_count(flat.numel(), density), sorted=False).indices] = True
    return keep.reshape(scores.shape)


SELECTORS = {'kthvalue': topk_mask, 'sort': sort_mask, 'topk': torch_topk_mask}


class Pipeline:
    "One Trainer; `selector` is the mask function `GetSubnet` uses while this pipeline steps."
    def __init__(self, model, hp, train, device, selector=topk_mask):
        self.timer, self.selector = StepTimer(device), selector
        self.trainer = Trainer(model, hp, train, callbacks=[self.timer], device=device)

    def run(self, n:int) -> list[float]:
        self.timer.times, saved = [], ep.topk_mask
        ep.topk_mask = self.selector   # GetSubnet.forward looks topk_mask up in the module at call time
        try: self.trainer.fit(start=self.trainer.step, end=self.trainer.step + n)
        finally: ep.topk_mask = saved
        return self.timer.times


def time_selectors(model, density, device, reps):
    "Median ms to compute every layer's mask once, per selector (interleaved repetitions)."
    scores = [torch.randn(p.shape, device=device).abs() for p in prunable_parameters(model).values()]
    for name, f in SELECTORS.items():   # check they agree (no ties in continuous scores) and warm up
        for s in scores: assert torch.equal(f(s, density), topk_mask(s, density)), name
    times = {k: [] for k in SELECTORS}
    for _ in range(reps):
        for name, f in SELECTORS.items():
            sync(device); t0 = time.perf_counter()
            for s in scores: f(s, density)
            sync(device); times[name].append(time.perf_counter() - t0)
    return {k: 1000 * float(np.median(v)) for k, v in times.items()}


def main(argv=None):
    args = parse_args(argv)
    src = cifar10_or_skip('supermask_step')
    if src is None: return
    device = pick_device(args, 'supermask_step')
    train, _ = load_dataset('cifar10', root=src)   # decoded once, then cached as uint8 under ticketlab_home()/'cache'
    hp = supermask_train_hparams(model=args.model, batch_size=args.batch_size, precision=args.precision)

    print(machine(device))
    print(f'precision: {args.precision} -> {resolve_precision(args.precision, device)}')
    print(f'model: {args.model}  density k: {args.density}  batch size: {args.batch_size}  '
          f'timed steps: {args.steps} per pipeline in {args.rounds} alternating rounds  warmup: {args.warmup}')
    print(f'load average before: {load_average()}')

    seed_all(0)
    dense_net = get_model(args.model, train.num_classes, train.shape)
    seed_all(1)
    sm_net = supermask_model(dense_net, density=args.density, weight_init='keep')   # the same random weights
    n_w = sum(p.numel() for p in prunable_parameters(dense_net).values())
    print(f'prunable weights: {n_w:,} in {len(prunable_parameters(dense_net))} layers')

    pipes = {'dense': Pipeline(dense_net, hp, train, device), 'supermask': Pipeline(sm_net, hp, train, device)}
    if args.sort:
        seed_all(1)
        pipes['alg1-sort'] = Pipeline(supermask_model(dense_net, density=args.density, weight_init='keep'), hp, train, device, sort_mask)
    for p in pipes.values(): p.run(args.warmup)
    times = {k: [] for k in pipes}
    ends = [(r * args.steps) // args.rounds for r in range(args.rounds + 1)]
    for r in range(args.rounds):
        for k in abba(pipes, r): times[k] += pipes[k].run(ends[r + 1] - ends[r])
    print(f'load average after: {load_average()}')

    wall = {k: float(np.median([w for w, _ in v])) for k, v in times.items()}
    cpu = {k: float(np.median([c for _, c in v])) for k, v in times.items()}
    for k, v in times.items():
        print(f'{k:10s} wall: median {1000 * wall[k]:8.1f} ms/step  min {1000 * min(w for w, _ in v):8.1f}  '
              f'{wall[k] / wall["dense"]:.2f}x dense   cpu time: median {1000 * cpu[k]:8.1f} ms/step  '
              f'{cpu[k] / cpu["dense"]:.2f}x dense   ({len(v)} steps)')
    sel = time_selectors(dense_net, args.density, device, args.topk_reps)
    print('mask computation alone, all layers once (median wall ms): ' +
          '  '.join(f'{k} {v:.1f} ({100 * v / (1000 * wall["dense"]):.1f}% of a dense step)' for k, v in sel.items()))
    # One thread on a cpu: the process's cpu time is the step's compute, immune to waiting for a core that other jobs
    # hold; otherwise (threads idle in parallel regions, or a GPU) only the wall time means anything.
    use_cpu = device.type == 'cpu' and torch.get_num_threads() == 1
    r = (cpu if use_cpu else wall)
    print(f'ratio of median wall step times: {wall["supermask"] / wall["dense"]:.2f}' + (f'  (alg1-sort: {wall["alg1-sort"] / wall["dense"]:.2f})' if args.sort else ''))
    print(f'ratio of median {"cpu" if use_cpu else "wall"} step times, supermask / dense (goal <= 1.3):')
    print(f'ratio: {r["supermask"] / r["dense"]:.2f}')


if __name__ == '__main__': main()
