#!/usr/bin/env python
"""fp32 training in channels_last memory against contiguous memory, side by side in one run: what the precision
policy's layout choice (`ticketlab.core.precision_probe`'s `fp32_layout`) is worth on this machine.

Both pipelines are `ticketlab.train.Trainer` on the same CIFAR-10 images through the same `Loader` (batched pad-4
crop + flip), in fp32 with SGD, from the same initial weights: one with `layout='contiguous'` (what fp32 always ran
before the probe measured layouts), one with `layout='channels_last'`. Each first runs `--warmup` untimed steps; the
timed steps are split into rounds that alternate between the two (ABBA), each step is timed on its own, and the
median step time gives the images/s. The header shows what the probe chose here and its own timings (a small conv
net at batch 16), so the two measurements can be compared.

The last line is `ratio: X.XX` = contiguous step time ÷ channels_last step time: above 1, channels_last is faster.

    /work/venv/bin/python benchmarks/layout.py                   # ResNet-20, batch 128, 40 timed steps each
    /work/venv/bin/python benchmarks/layout.py --model vgg11
"""
from __future__ import annotations
import argparse, sys
from pathlib import Path

import numpy as np, torch

from ticketlab.core import FP32_LAYOUTS, precision_probe, seed_all
from ticketlab.data import load_dataset
from ticketlab.models import get_model, model_names
from ticketlab.train import Trainer, TrainHparams
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import StepTimer, abba, add_device_args, busy_cpus, cifar10_or_skip, load_average, machine, pick_device  # noqa: E402

def parse_args(argv=None):
    p = argparse.ArgumentParser(prog='layout', description=__doc__.split('\n')[0])
    p.add_argument('--steps', type=int, default=40, help='timed steps per layout (default 40)')
    p.add_argument('--warmup', type=int, default=5, help='untimed steps per layout before timing (default 5)')
    p.add_argument('--rounds', type=int, default=8, help='alternating rounds the timed steps are split into (default 8)')
    p.add_argument('--batch-size', type=int, default=128, help='examples per step (default 128)')
    p.add_argument('--model', default='resnet20', choices=model_names(), metavar='MODEL',
                   help='architecture (default resnet20); one of ' + ', '.join(model_names()))
    add_device_args(p)
    a = p.parse_args(argv)
    for k in ('steps', 'rounds', 'batch_size'):
        if getattr(a, k) < 1: p.error(f'--{k.replace("_", "-")} must be >= 1')
    if a.warmup < 0: p.error('--warmup must be >= 0')
    a.rounds = min(a.rounds, a.steps)
    return a


def trainer(train, args, device, layout:str) -> tuple[Trainer, StepTimer]:
    "An fp32 `Trainer` of `args.model` in `layout`, with a step timer."
    hp = TrainHparams(dataset='cifar10', model=args.model, batch_size=args.batch_size, lr=0.1, momentum=0.9, weight_decay=1e-4,
                      schedule='constant', augment=True, precision='fp32', layout=layout)
    seed_all(0)
    timer = StepTimer(device)
    return Trainer(get_model(args.model, train.num_classes, train.shape), hp, train, callbacks=[timer], device=device), timer


def main(argv=None):
    args = parse_args(argv)
    src = cifar10_or_skip('layout')
    if src is None: return
    device = pick_device(args, 'layout')
    busy = busy_cpus()
    train, _ = load_dataset('cifar10', root=src)
    bs = args.batch_size
    print(machine(device))
    if device.type == 'cpu':
        pr = precision_probe(device)
        print(f"precision probe ({pr['date']}, {pr['threads']} threads, small conv net, batch 16): fp32 {1000*pr['fp32_contiguous_s']:.1f} ms "
              f"contiguous, {1000*pr['fp32_channels_last_s']:.1f} ms channels_last (needs {pr['min_layout_speedup']}x) -> fp32_layout = "
              f"{pr['fp32_layout']}")
    print(f'model: {args.model}  batch size: {bs}  fp32  timed steps: {args.steps} per layout in {args.rounds} alternating rounds  '
          f'warmup: {args.warmup}')
    pipes = {k: trainer(train, args, device, k) for k in FP32_LAYOUTS}
    for t, timer in pipes.values(): timer.steps(t, args.warmup)
    print(f'other processes kept {busy:.1f} cpus busy at the start; load average {load_average()}' if busy is not None
          else f'load average before: {load_average()}')
    times = {k: [] for k in pipes}
    ends = [(r*args.steps)//args.rounds for r in range(args.rounds + 1)]
    for r in range(args.rounds):
        for k in abba(pipes, r): times[k] += pipes[k][1].steps(pipes[k][0], ends[r+1] - ends[r])
    print(f'load average after: {load_average()}')
    med = {k: float(np.median(v)) for k, v in times.items()}
    for k in FP32_LAYOUTS: print(f'{k:14s} {bs/med[k]:8.1f} images/s ({1000*med[k]:6.1f} ms/step)  median of {len(times[k])} steps')
    print(f'ratio: {med["contiguous"]/med["channels_last"]:.2f}')


if __name__ == '__main__': main()
