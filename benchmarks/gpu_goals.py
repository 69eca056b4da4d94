#!/usr/bin/env python
"""The one-device goals of issue 13, measured on whatever device runs this: one ResNet-20 at batch 128, eight stepped
together, and a full 12-level IMP of ResNet-20 at the paper's 62,400 steps per level, projected from the measured step.

tuned: `ticketlab.train.Trainer` at its fastest settings for the device: precision 'auto' (bf16 autocast + channels_last
       where bf16 is faster), the uint8 training set resident on the device with batched crop + flip (`Loader`), torch's
       fused optimizer kernels (`fused_optimizer='on'`), and `torch.compile` in `--compile-mode` ('auto': 'reduce-overhead',
       which replays the forward and backward as CUDA graphs, on CUDA; no compile on the CPU, where it was measured no faster).
eager: the same `Trainer` at ticketlab's reproducible defaults: fp32, no compile, foreach optimizer kernels.

Both train ResNet-20 on CIFAR-10 (the first `--n-images` training images) from the same initial weights with the same
SGD (momentum 0.9, weight decay 1e-4, constant LR 0.1), batch `--batch-size`. Each first runs `--warmup` untimed steps
(compilation, CUDA graph recording, oneDNN kernel creation); the `--steps` timed steps are split into `--rounds` rounds
that alternate between the two in ABBA order; each step is timed on its own after a device synchronize and images/s =
batch size / median step time.

The goals (issue 13, for an H100-class GPU):
  1. one ResNet-20 at batch 128: tuned images/s >= 40,000;
  2. eight ResNet-20s stepped together (`ticketlab.engine.GroupTrainer`, fp32, what `train_runs(engine='fused')` does)
     >= 4x the aggregate images/s of the same eight stepped one at a time, measured by `engine_throughput.measure`;
  3. a full IMP of ResNet-20, 12 levels x 62,400 steps (data_diet.txt App. A), in under 30 minutes: projected as
     12 x 62,400 x the tuned median step time. It counts training steps only; evaluation, checkpoints and pruning
     between levels come on top (the projection is a lower bound).
Each goal line says `met` or `not met`; on a CPU they are far from met and the lines say by how much.

    /work/venv/bin/python benchmarks/gpu_goals.py --device cuda     # on a GPU
    /work/venv/bin/python benchmarks/gpu_goals.py                   # on this CPU: the same figures, for comparison
    /work/venv/bin/python benchmarks/gpu_goals.py --steps 4 --warmup 1 --rounds 2 --group-steps 2 --n-images 512   # a smoke run
"""
from __future__ import annotations
import argparse, sys, time, warnings
from pathlib import Path

import numpy as np, torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import StepTimer, abba, add_device_args, cifar10_or_skip, load_average, machine, pick_device  # noqa: E402

GOAL_IMAGES_S, GOAL_GROUP_RATIO, GOAL_IMP_MINUTES = 40_000, 4.0, 30
IMP_LEVELS, IMP_STEPS = 12, 62_400
LR, MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 1e-4


def parse_args(argv=None):
    from ticketlab.train import COMPILE_MODES
    p = argparse.ArgumentParser(prog='gpu_goals', description=__doc__.split('\n')[0])
    p.add_argument('--steps', type=int, default=60, help='timed steps of each one-model path (default 60)')
    p.add_argument('--rounds', type=int, default=6, help='ABBA rounds the timed steps are split into (default 6)')
    p.add_argument('--warmup', type=int, default=None, help='untimed steps of each path first (default 20 on CUDA, 5 on the CPU)')
    p.add_argument('--batch-size', type=int, default=128, help='examples per step and network (default 128)')
    p.add_argument('--n-images', type=int, default=50000, help='CIFAR-10 training images the loaders draw from (default 50000)')
    p.add_argument('--compile-mode', default='auto', choices=('auto', 'off') + COMPILE_MODES,
                   help="the tuned path's torch.compile mode (default auto: reduce-overhead on CUDA, off on the CPU)")
    p.add_argument('--group', type=int, default=8, help='networks stepped together for goal 2 (default 8; 0 skips goal 2)')
    p.add_argument('--group-steps', type=int, default=None, help='timed steps per path for goal 2 (default 40 on CUDA, 8 on the CPU)')
    add_device_args(p)
    a = p.parse_args(argv)
    if min(a.steps, a.rounds, a.batch_size, a.n_images) < 1 or (a.warmup is not None and a.warmup < 0) or a.group < 0:
        p.error('--steps, --rounds, --batch-size, --n-images must be >= 1; --warmup and --group >= 0')
    if a.n_images < a.batch_size: p.error('--n-images must be at least --batch-size')
    a.rounds = min(a.rounds, a.steps)
    return a


def trainer(train, args, device, tuned:bool):
    "A ResNet-20 `Trainer` on `train` from initial weights seeded 0: the tuned path or the eager one; and its step timer."
    from ticketlab.core import seed_all
    from ticketlab.models import get_model
    from ticketlab.train import HparamWarning, Trainer, TrainHparams
    mode = args.compile_mode
    kw = (dict(precision='auto', fused_optimizer='on', compile=mode != 'off', compile_mode='default' if mode == 'off' else mode)
          if tuned else dict(precision='fp32', fused_optimizer='off'))
    hp = TrainHparams(dataset='cifar10', model='resnet20', batch_size=args.batch_size, augment=True, lr=LR, momentum=MOMENTUM,
                      weight_decay=WEIGHT_DECAY, schedule='constant', training_steps='1000000it', **kw)
    seed_all(0)
    timer = StepTimer(device)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', HparamWarning)
        t = Trainer(get_model('resnet20', train.num_classes, train.shape), hp, train, callbacks=[timer], device=device)
    return t, timer


def goal(name:str, value:float, target:float, unit:str, higher:bool=True, digits:int=1) -> str:
    "One line: the measured value against the goal, met or not, and the factor between them."
    met = value >= target if higher else value <= target
    how = f'{value/target:.3g}x the goal' if higher else f'{value/target:.3g}x the allowed time'
    return f'goal {name}: {value:,.{digits}f} {unit} against {"at least" if higher else "at most"} {target:,} {unit}: {"met" if met else "not met"} ({how})'


def main(argv=None):
    args = parse_args(argv)
    src = cifar10_or_skip('gpu_goals')
    if src is None: return
    device = pick_device(args, 'gpu_goals')
    if args.compile_mode == 'auto': args.compile_mode = 'reduce-overhead' if device.type == 'cuda' else 'off'
    warm = args.warmup if args.warmup is not None else (20 if device.type == 'cuda' else 5)
    from ticketlab.data import load_dataset
    train = load_dataset('cifar10', root=src)[0]     # decoded once, then cached as uint8 under ticketlab_home()/cache
    train = train.subset(torch.arange(min(args.n_images, len(train))))
    print(machine(device))
    print(f'load average before: {load_average()}')
    paths = {k: trainer(train, args, device, tuned=k == 'tuned') for k in ('tuned', 'eager')}
    t = paths['tuned'][0]
    print(f'ResNet-20, batch {args.batch_size}, {len(train)} CIFAR-10 images; {args.steps} timed steps per path in {args.rounds} ABBA rounds '
          f'after {warm} untimed')
    print(f'tuned: precision {t.precision}, {"channels_last" if t.mem == torch.channels_last else "contiguous"}, '
          f'fused optimizer {bool(t.opt.param_groups[0]["fused"])}, compile {args.compile_mode}, CUDA graphs {t._graphs}')
    print('eager: precision fp32, contiguous, foreach optimizer, no compile')
    t0 = time.perf_counter()
    for k, (tr, timer) in paths.items(): timer.steps(tr, warm)
    print(f'warmup (compilation included): {time.perf_counter() - t0:.1f} s')
    times = {k: [] for k in paths}
    ends = [(r*args.steps)//args.rounds for r in range(args.rounds + 1)]
    for r in range(args.rounds):
        for k in abba(list(paths), r): times[k] += paths[k][1].steps(paths[k][0], ends[r+1] - ends[r])
    med = {k: float(np.median(v)) for k, v in times.items()}
    ips = {k: args.batch_size / med[k] for k in med}
    for k in paths: print(f'{k:>6s}: {ips[k]:10,.1f} images/s ({1000*med[k]:7.2f} ms/step, median of {len(times[k])})')
    print(f'tuned / eager: {ips["tuned"]/ips["eager"]:.2f}')
    lines = [goal('1 (one ResNet-20, batch 128)', ips['tuned'], GOAL_IMAGES_S, 'images/s')]
    if args.group:
        from engine_throughput import measure
        gsteps = args.group_steps or (40 if device.type == 'cuda' else 8)
        ga = argparse.Namespace(width=1.0, batch_size=args.batch_size, precision='fp32', steps=gsteps, rounds=min(4, gsteps),
                                warmup=max(1, min(warm, 5)), memory=False, threads=args.threads)
        g = measure('resnet20', args.group, train, ga, device)
        ratio = g['aggregate']['fused'] / g['aggregate']['solo']
        print(f'{args.group} ResNet-20s, fp32, {gsteps} timed steps per path: aggregate images/s stepped together {g["aggregate"]["fused"]:,.1f}, '
              f'one at a time {g["aggregate"]["solo"]:,.1f}')
        lines.append(goal(f'2 ({args.group} stepped together / one at a time)', ratio, GOAL_GROUP_RATIO, 'x', digits=2))
    minutes = IMP_LEVELS * IMP_STEPS * med['tuned'] / 60
    print(f'projected IMP: {IMP_LEVELS} levels x {IMP_STEPS:,} steps x {1000*med["tuned"]:.2f} ms = {minutes:,.1f} minutes '
          f'({minutes/60:,.1f} hours) of training steps')
    lines.append(goal('3 (12-level IMP of ResNet-20, training steps only)', minutes, GOAL_IMP_MINUTES, 'minutes', higher=False))
    print(f'load average after:  {load_average()}')
    print('\n'.join(lines))


if __name__ == '__main__': main()
