#!/usr/bin/env python
"""The cost of §4's telemetry: training steps with `ticketlab.telemetry.TelemetryCB` recording at every step,
against the same training without it, side by side in one run.

Both pipelines are `ticketlab.train.Trainer`s on CIFAR-10 with the same architecture, initial weights, batch size,
augmentation and precision policy ('auto'); one has a `TelemetryCB` that records every step (mean |w|, sign changes,
the gradient norm, L2 distance and cosine to the initialization and to a 'final' state, four tracked weights) without
evaluation (evaluation is a forward pass over the evaluation set at the steps asked for, a separate and known cost).
Each first runs `--warmup` untimed steps; the timed steps alternate between the pipelines in ABBA rounds; every step is
timed on its own. The last line is `ratio: X.XX` = median step time with telemetry / median step time without; the
issue asks for at most about 1.3.

    /work/venv/bin/python benchmarks/telemetry_overhead.py                  # ResNet-20, batch 128, 40 steps each
    /work/venv/bin/python benchmarks/telemetry_overhead.py --threads 1      # on a machine loaded by other jobs
"""
from __future__ import annotations
import argparse, sys, time
from pathlib import Path

import numpy as np, torch

from ticketlab.core import seed_all, resolve_precision
from ticketlab.data import load_dataset
from ticketlab.models import get_model, model_names
from ticketlab.train import Trainer, TrainHparams
from ticketlab.telemetry import TelemetryCB
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import StepTimer, abba, add_device_args, busy_cpus, cifar10_or_skip, load_average, machine, pick_device  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog='telemetry_overhead', description=__doc__.split('\n')[0])
    p.add_argument('--steps', type=int, default=40, help='timed steps per pipeline (default 40)')
    p.add_argument('--warmup', type=int, default=5, help='untimed steps per pipeline before timing (default 5)')
    p.add_argument('--rounds', type=int, default=8, help='alternating rounds the timed steps are split into (default 8)')
    p.add_argument('--batch-size', type=int, default=128, help='examples per step (default 128)')
    p.add_argument('--model', default='resnet20', choices=model_names(), metavar='MODEL', help='the architecture (default resnet20)')
    p.add_argument('--width', type=float, default=1.0, help='width multiplier (default 1)')
    add_device_args(p)
    a = p.parse_args(argv)
    for k in ('steps', 'rounds', 'batch_size'):
        if getattr(a, k) < 1: p.error(f'--{k.replace("_", "-")} must be >= 1')
    a.rounds = min(a.rounds, a.steps)
    return a


class Pipe:
    "A Trainer (with or without telemetry at every step) that trains `n` more steps on demand."
    def __init__(self, train, args, device, telemetry:bool):
        hp = TrainHparams(dataset='cifar10', model=args.model, width=args.width, batch_size=args.batch_size, lr=0.1,
                          schedule='constant', augment=True, precision='auto')
        seed_all(0)
        net = get_model(args.model, train.num_classes, train.shape, width=args.width)
        init = {k: v.clone() for k, v in net.state_dict().items()}
        final = {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v for k, v in init.items()}
        self.timer = StepTimer(device)
        self.tel = TelemetryCB(range(10**5), init=init, final=final) if telemetry else None
        self.trainer = Trainer(net, hp, train, callbacks=[self.timer] + ([self.tel] if telemetry else []), device=device)

    def run(self, n:int) -> list[float]:
        "Train `n` more steps; their times in seconds."
        return self.timer.steps(self.trainer, n)


def main(argv=None):
    args = parse_args(argv)
    src = cifar10_or_skip('telemetry_overhead')
    if src is None: return
    device = pick_device(args, 'telemetry_overhead')
    busy = busy_cpus()
    train, _ = load_dataset('cifar10', root=src)
    print(machine(device))
    print(f'model: {args.model} (width {args.width})  batch size: {args.batch_size}  precision auto -> {resolve_precision("auto", device)}  '
          f'timed steps: {args.steps} per pipeline in {args.rounds} alternating rounds  warmup: {args.warmup}')
    pipes = {'plain': Pipe(train, args, device, False), 'telemetry': Pipe(train, args, device, True)}
    for p in pipes.values(): p.run(args.warmup)
    print(f'other processes kept {busy:.1f} cpus busy at the start; load average {load_average()}' if busy is not None
          else f'load average before: {load_average()}')
    times = {k: [] for k in pipes}
    ends = [(r * args.steps) // args.rounds for r in range(args.rounds + 1)]
    for r in range(args.rounds):
        for k in abba(pipes, r): times[k] += pipes[k].run(ends[r + 1] - ends[r])
    print(f'load average after: {load_average()}')
    print(f"telemetry: {len(pipes['telemetry'].tel.frame())} steps recorded (warmup and timed steps, one row each)")
    med = {k: float(np.median(v)) for k, v in times.items()}
    mean = {k: float(np.mean(v)) for k, v in times.items()}
    print(f'mean of {len(times["plain"])} steps: plain {1000*mean["plain"]:.1f} ms  telemetry {1000*mean["telemetry"]:.1f} ms  '
          f'ratio {mean["telemetry"]/mean["plain"]:.3f}')
    print(f'median: plain {1000*med["plain"]:.1f} ms/step  telemetry {1000*med["telemetry"]:.1f} ms/step')
    print(f'ratio: {med["telemetry"]/med["plain"]:.2f}')


if __name__ == '__main__': main()
