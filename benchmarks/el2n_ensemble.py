#!/usr/bin/env python
"""Time an EL2N score ensemble on CIFAR-10: `ticketlab.el2n.ensemble_scores` (one `train_runs` list of K runs stopped at
step t) against the conventional way, K separate `train_run` calls each trained to the end of its schedule with a
checkpoint at t, then the scores computed separately, side by side in one run.

ensemble: `ensemble_scores(hp, K, t)`: the K members `ensemble_hparams(hp, K)` as one list of `RunSpec(stop=t)`, each
          trained for t steps under the full schedule, then `el2n_scores` of their weights at t, saved as `Scores`.
baseline: for k in 0..K-1 `train_run(member k, checkpoints=[t])` (trained to T), then `el2n_scores` of the K checkpoints
          at t: what `ensemble_scores` did before runs could stop.

Both score the same `--n` CIFAR-10 training images with the same K networks at the same step t: the script checks that the
scores agree. Each pipeline trains into a fresh temporary run store in every round; `--rounds` alternate the two (ABBA).
The last line printed is `ratio: X.XX` = baseline seconds ÷ ensemble seconds (about T/t when training dominates).

    /work/venv/bin/python benchmarks/el2n_ensemble.py                                  # ResNet-20 width 0.5, 5000 images
    /work/venv/bin/python benchmarks/el2n_ensemble.py --threads 1 --n 512 --K 2 --t 4 --training-steps 16it --width 0.25
"""
from __future__ import annotations
import argparse, sys, tempfile, time
from pathlib import Path

import numpy as np, torch

from ticketlab.data import load_dataset, class_balanced_subset
from ticketlab.models import model_names
from ticketlab.store import Store
from ticketlab.train import TrainHparams
from ticketlab.runs import train_run, build_model, plan
from ticketlab.el2n import ensemble_scores, ensemble_hparams, el2n_scores
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import abba, add_device_args, cifar10_or_skip, load_average, machine, pick_device, sync  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog='el2n_ensemble', description=__doc__.split('\n')[0])
    p.add_argument('--n', type=int, default=5000, help='CIFAR-10 training images the members train on and are scored, class-balanced (default 5000)')
    p.add_argument('--K', type=int, default=4, help='networks in the ensemble (default 4; App. A: 10)')
    p.add_argument('--t', type=int, default=40, help='the step t the members are scored at, in iterations (default 40)')
    p.add_argument('--training-steps', default='320it', help="each member's schedule length T (default 320it: T/t = 8, App. A's 62400/7800)")
    p.add_argument('--model', default='resnet20', choices=model_names(), metavar='MODEL', help='architecture (default resnet20)')
    p.add_argument('--width', type=float, default=0.5, help='width multiplier (default 0.5)')
    p.add_argument('--batch-size', type=int, default=128, help='batch size (default 128)')
    p.add_argument('--precision', default='fp32', help="the members' precision (default fp32: the two pipelines' scores agree bit for bit)")
    p.add_argument('--rounds', type=int, default=2, help='alternating rounds, each pipeline once per round (default 2)')
    add_device_args(p)
    a = p.parse_args(argv)
    if not 10 <= a.n <= 50000: p.error('--n must be in [10, 50000] (n // 10 images of each class)')
    if a.K < 1 or a.t < 1 or a.rounds < 1: p.error('--K, --t and --rounds must be >= 1')
    return a


def ensemble(hp, K, t, data, device):
    "ticketlab's way: one call, the members stopped at t."
    with tempfile.TemporaryDirectory() as d:
        return ensemble_scores(hp, K, t, store=Store(Path(d)/'runs'), data=data, root=Path(d)/'scores', device=device, progress=False).values


def baseline(hp, K, t, data, device):
    "K separate runs to the end of their schedule (a checkpoint at t), then the scores."
    with tempfile.TemporaryDirectory() as d:
        st = Store(d)
        runs = [train_run(h, st, [t], data=data, eval_every=h.training_steps, device=device, progress=False) for h in ensemble_hparams(hp, K)]
        return el2n_scores([r.weights(t) for r in runs], data[0], model=build_model(hp, data[0]), device=device)


def main(argv=None):
    args = parse_args(argv)
    src = cifar10_or_skip('el2n_ensemble')
    if src is None: return
    device = pick_device(args, 'el2n_ensemble')
    train, test = load_dataset('cifar10', root=src)   # decoded once, then cached as uint8 under ticketlab_home()/cache
    # class-balanced draws: the image folders are stored class by class, so the first n images would all be airplanes
    # (networks that always answer 'airplane' score EL2N 0 on every example, and the agreement check would say nothing)
    data = (class_balanced_subset(train, args.n // train.num_classes, 0), class_balanced_subset(test, 100, 0))
    hp = TrainHparams(dataset='cifar10', model=args.model, width=args.width, batch_size=args.batch_size, lr=0.1,
                      training_steps=args.training_steps, augment=True, precision=args.precision)
    T = plan(hp, data[0]).it(hp.training_steps)
    if args.t > T: sys.exit(f'el2n_ensemble: --t {args.t} is after the end of training, {T}it')

    print(machine(device))
    print(f'EL2N of {len(data[0])} class-balanced CIFAR-10 training images at t = {args.t} of T = {T} iterations, K = {args.K} {args.model} at width '
          f'{args.width:g}, batch {args.batch_size}, {args.precision}, {args.rounds} alternating rounds, fresh run stores')
    print(f'ensemble: ticketlab.el2n.ensemble_scores, one train_runs list of K runs stopped at t ({args.K * args.t} steps)')
    print(f'baseline: K train_run calls to T with a checkpoint at t, then el2n_scores ({args.K * T} steps)')

    print(f'load average before: {load_average()}')
    secs, res = {'ensemble': 0.0, 'baseline': 0.0}, {}
    for r in range(args.rounds):
        for k in abba(['ensemble', 'baseline'], r):
            sync(device); t0 = time.perf_counter()
            res[k] = (ensemble if k == 'ensemble' else baseline)(hp, args.K, args.t, data, device)
            sync(device); secs[k] += time.perf_counter() - t0
    print(f'load average after:  {load_average()}')
    e, b = res['ensemble'], res['baseline']
    print(f'agreement: max |difference| {np.max(np.abs(e - b)):.1e} (EL2N of the first examples: {", ".join(f"{x:.4f}" for x in e[:3])}; '
          f'over all: mean {e.mean():.4f}, min {e.min():.4f}, max {e.max():.4f})')
    for k in ('ensemble', 'baseline'): print(f'{k + ":":10s}{secs[k] / args.rounds:8.2f} s per ensemble')
    print(f'ratio: {secs["baseline"] / secs["ensemble"]:.2f}')


if __name__ == '__main__': main()
