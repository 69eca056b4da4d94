#!/usr/bin/env python
"""Training throughput of ticketlab's engine against a conventional PyTorch pipeline, side by side in one run.

engine:       ticketlab's in-memory uint8 CIFAR-10, `ticketlab.loader.Loader` (batched pad-4 crop + flip on the
              device), `ticketlab.train.Trainer` with precision 'auto' (bf16 autocast + channels_last where
              `ticketlab.core.precision_probe` measured it faster than fp32, else fp32 in the memory layout the probe
              measured faster for it).
conventional: the same images as a torchvision-CIFAR10-style data set (a uint8 array in memory, one PIL image per
              sample; or a torchvision ImageFolder of the JPEG files with `--baseline imagefolder`), per-sample PIL
              transforms (RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize), a DataLoader with
              `--workers` worker processes, fp32, contiguous memory, one model, a plain loop.

Both train the same architecture from the same initial weights with the same SGD settings and batch size, for
the same number of steps. Each pipeline first runs `--warmup` untimed steps (oneDNN kernel creation, worker
start-up, the first epoch's order). The timed steps are split into rounds that alternate between the pipelines
(ABBA order), so that a change in the machine's load hits both alike; every step is timed on its own and the
median step time gives the images/s (robust to bursts of other processes' load). The last line printed is
`ratio: X.XX` = engine images/s / conventional images/s. The line before it is the roofline: the step's FLOPs
(torch's FlopCounterMode) at this machine's matmul rate in the engine's precision give the shortest step that
precision allows, hence the highest ratio this machine can show against the conventional pipeline measured here.

    /work/venv/bin/python benchmarks/train_throughput.py                 # ResNet-20, 40 steps each, batch 128
    /work/venv/bin/python benchmarks/train_throughput.py --threads 1     # on a machine loaded by other jobs
"""
from __future__ import annotations
import argparse, os, sys, tarfile, tempfile, time
from pathlib import Path

import numpy as np, torch, torch.nn.functional as F

from ticketlab.core import LAYOUTS, PRECISIONS, cpu_has_amx, layout_name, memory_format, precision_probe, resolve_precision, seed_all
from ticketlab.data import find_cifar10_jpeg, load_dataset
from ticketlab.models import get_model, model_names
from ticketlab.train import Trainer, TrainHparams
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (StepTimer, abba, add_device_args, busy_cpus, cifar10_or_skip, load_average,  # noqa: E402
                     machine, matmul_rate, pick_device, step_flops, sync)

LR, MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 1e-4  # the same SGD for both pipelines (constant LR: the schedule costs nothing)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog='train_throughput', description=__doc__.split('\n')[0])
    p.add_argument('--steps', type=int, default=40, help='timed steps per pipeline (default 40)')
    p.add_argument('--warmup', type=int, default=5, help='untimed steps per pipeline before timing (default 5)')
    p.add_argument('--rounds', type=int, default=8, help='alternating rounds the timed steps are split into (default 8)')
    p.add_argument('--time-limit', type=float, default=100,
                   help='stop timing after the first round that ends past this many seconds (default 100); both pipelines '
                        'always time the same number of steps')
    p.add_argument('--batch-size', type=int, default=128, help='examples per step (default 128)')
    p.add_argument('--model', default='resnet20', choices=model_names(), metavar='MODEL',
                   help='architecture (default resnet20); one of ' + ', '.join(model_names()))
    p.add_argument('--precision', default='auto', choices=PRECISIONS, help="the engine's precision (default auto)")
    p.add_argument('--layout', default='auto', choices=LAYOUTS, help="the engine's memory layout (default auto: what the precision policy picks)")
    add_device_args(p)
    p.add_argument('--workers', type=int, default=1, help="the conventional DataLoader's num_workers (default 1)")
    p.add_argument('--baseline', default='memory', choices=('memory', 'imagefolder'),
                   help='conventional data: PIL images from a uint8 array in memory (default), or an ImageFolder of the JPEG '
                        'files (unpacked into a temporary folder; decodes a JPEG per sample)')
    a = p.parse_args(argv)
    for k in ('steps', 'rounds', 'batch_size', 'threads'):
        if getattr(a, k) is not None and getattr(a, k) < 1: p.error(f'--{k.replace("_", "-")} must be >= 1')
    if a.warmup < 0 or a.workers < 0: p.error('--warmup and --workers must be >= 0')
    a.rounds = min(a.rounds, a.steps)
    return a


class Engine:
    "ticketlab: uint8 data on the device, `Loader`'s batched augmentation, `Trainer` under the precision policy."
    def __init__(self, train, args, device):
        hp = TrainHparams(dataset='cifar10', model=args.model, batch_size=args.batch_size, optimizer='sgd', lr=LR, momentum=MOMENTUM,
                          weight_decay=WEIGHT_DECAY, schedule='constant', augment=True, precision=args.precision,
                          layout=args.layout)
        seed_all(0)
        self.timer = StepTimer(device)
        self.trainer = Trainer(get_model(args.model, train.num_classes, train.shape), hp, train, callbacks=[self.timer], device=device)

    def run(self, n:int) -> list[float]:
        "Train `n` more steps; their times in seconds."
        return self.timer.steps(self.trainer, n)

    def close(self): pass


class PILImages(torch.utils.data.Dataset):
    "torchvision.datasets.CIFAR10's recipe: uint8 HWC images in memory, one PIL image per sample, then `transform`."
    def __init__(self, x:torch.Tensor, y:torch.Tensor, transform):
        self.x, self.y, self.transform = x.permute(0, 2, 3, 1).contiguous().numpy(), y.tolist(), transform
    def __len__(self): return len(self.y)
    def __getitem__(self, i):
        from PIL import Image
        return self.transform(Image.fromarray(self.x[i])), self.y[i]


def extract_train_split(tarball:Path, dest:Path) -> Path:
    "Unpack the train/ images of the CIFAR-10 JPEG archive into `dest`; the ImageFolder root."
    with tarfile.open(tarball) as tf:
        tf.extractall(dest, members=[m for m in tf if m.isfile() and '/train/' in f'/{m.name}'], filter='data')
    return next(p for p in dest.rglob('train') if p.is_dir())


class Conventional:
    "The usual PyTorch CIFAR recipe: a DataLoader over per-sample PIL transforms, one fp32 model, SGD, a plain loop."
    def __init__(self, train, args, device, tmp:Path):
        import torchvision, torchvision.transforms as T
        tfm = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(train.mean, train.std)])
        if args.baseline == 'imagefolder': ds = torchvision.datasets.ImageFolder(str(extract_train_split(find_cifar10_jpeg(), tmp)), tfm)
        else: ds = PILImages(train.x, train.y, tfm)
        self.dl = torch.utils.data.DataLoader(ds, batch_size=args.batch_size, shuffle=True, drop_last=True, num_workers=args.workers,
                                              persistent_workers=args.workers > 0, pin_memory=device.type == 'cuda',
                                              generator=torch.Generator().manual_seed(0))
        seed_all(0)
        self.device, self.model = device, get_model(args.model, train.num_classes, train.shape).to(device)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
        self.model.train()
        self.it = iter(self.dl)

    def run(self, n:int) -> list[float]:
        "Train `n` more steps; their times in seconds (waiting for the batch included)."
        times, dev = [], self.device
        for _ in range(n):
            sync(dev); t0 = time.perf_counter()
            try: x, y = next(self.it)
            except StopIteration: self.it = iter(self.dl); x, y = next(self.it)
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            loss = F.cross_entropy(self.model(x), y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            sync(dev); times.append(time.perf_counter() - t0)
        return times

    def close(self):
        "Stop the DataLoader's worker processes."
        if hasattr(self.it, '_shutdown_workers'): self.it._shutdown_workers()
        self.it = None


def roofline(train, args, device, med:dict) -> str:
    "The ratio's ceiling on this machine: a step's FLOPs at the matmul rate of the engine's precision, against the conventional step."
    prec = resolve_precision(args.precision, device)
    seed_all(0)
    model = get_model(args.model, train.num_classes, train.shape).to(device)
    x = torch.randn(args.batch_size, *train.shape, device=device)
    flops = step_flops(model, x, torch.randint(train.num_classes, (args.batch_size,), device=device))
    dtype = torch.bfloat16 if prec == 'bf16' else torch.float32
    rate = matmul_rate(device, dtype)
    floor = flops/rate
    return (f'roofline: a step is {flops/1e9:.1f} GFLOP of convolutions and matmuls (forward + backward); a {prec} 2048x2048 matmul runs at '
            f'{rate/1e9:.0f} GFLOP/s here, so no {prec} step takes less than {1000*floor:.0f} ms and the ratio cannot exceed '
            f'{med["conventional"]/floor:.2f}; the engine reaches {flops/med["engine"]/1e9:.0f} GFLOP/s ({flops/med["engine"]/rate:.0%} of that '
            f'rate), the conventional pipeline {flops/med["conventional"]/1e9:.0f} GFLOP/s')


def _fmt(secs, bs): return f'{bs/secs:8.1f} images/s ({1000*secs:6.1f} ms/step)'


def main(argv=None):
    args = parse_args(argv)
    src = cifar10_or_skip('train_throughput')
    if src is None: return
    device = pick_device(args, 'train_throughput')
    busy = busy_cpus()  # before this process does any work
    train, _ = load_dataset('cifar10', root=src)  # decoded once, then cached as uint8 under ticketlab_home()/'cache'
    bs, ncpu = args.batch_size, os.cpu_count()

    print(machine(device))
    print(f'amx (torch): {cpu_has_amx()}')
    pr = precision_probe(device)
    if pr.get('source') == 'measured':
        print(f"precision probe ({pr['date']}, {pr['threads']} threads): conv step fp32 {1000*pr['fp32_contiguous_s']:.1f} ms contiguous, "
              f"{1000*pr['fp32_channels_last_s']:.1f} ms channels_last (needs {pr['min_layout_speedup']}x) -> {pr['fp32_layout']}; "
              f"bf16 {1000*pr['bf16_s']:.1f} ms, bf16 speedup {pr['speedup']:.2f}x (needs {pr['min_speedup']}) -> auto = {pr['choice']}")
    else: print(f"precision probe: {pr['source']} -> auto = {pr['choice']}")
    if os.environ.get('TICKETLAB_PRECISION'): print(f"TICKETLAB_PRECISION={os.environ['TICKETLAB_PRECISION']} overrides the probe for 'auto'")
    print(f'model: {args.model}  batch size: {bs}  timed steps: {args.steps} per pipeline in {args.rounds} alternating rounds  warmup: {args.warmup}')
    print(f'engine:       ticketlab Loader (on-device crop+flip) + Trainer, precision {args.precision} -> {resolve_precision(args.precision, device)}, '
          f'{layout_name(memory_format(args.precision, device, args.layout))} memory')
    print(f'conventional: {args.baseline} dataset + per-sample PIL transforms, DataLoader num_workers={args.workers}, fp32')

    with tempfile.TemporaryDirectory(prefix='ticketlab-bench-') as tmp:
        pipes = {'engine': Engine(train, args, device), 'conventional': Conventional(train, args, device, Path(tmp))}
        try:
            for p in pipes.values(): p.run(args.warmup)
            print(f'other processes kept {busy:.1f} of {ncpu} cpus busy at the start; load average {load_average()}' if busy is not None
                  else f'load average before: {load_average()}')
            times, t_start = {k: [] for k in pipes}, time.perf_counter()
            ends = [(r*args.steps)//args.rounds for r in range(args.rounds + 1)]
            for r in range(args.rounds):
                for k in abba(pipes, r): times[k] += pipes[k].run(ends[r+1] - ends[r])
                if r + 1 < args.rounds and time.perf_counter() - t_start > args.time_limit:
                    print(f'time limit: stopped after round {r+1} of {args.rounds}'); break
            print(f'load average after: {load_average()}')
        finally:
            for p in pipes.values(): p.close()

    n, med, mean = len(times['engine']), {}, {}
    for k, ts in times.items(): med[k], mean[k] = float(np.median(ts)), float(np.mean(ts))
    if device.type == 'cpu' and torch.get_num_threads() > 1 and busy is not None and busy > 0.25:
        print(f'warning: other processes kept {busy:.1f} of the {ncpu} cpus busy. With {torch.get_num_threads()} threads each of the hundreds of '
              f'parallel regions of a step then waits for a free core, a fixed cost that slows the faster pipeline the most, so '
              f'this ratio is too low; rerun on an idle machine, or compare with --threads 1')
    print(f'mean of {n} steps: engine {_fmt(mean["engine"], bs)}  conventional {_fmt(mean["conventional"], bs)}  '
          f'ratio {mean["conventional"]/mean["engine"]:.2f}')
    print(f'engine:       {_fmt(med["engine"], bs)}  median of {n} steps')
    print(f'conventional: {_fmt(med["conventional"], bs)}  median of {n} steps')
    print(roofline(train, args, device, med))
    print(f'ratio: {med["conventional"]/med["engine"]:.2f}')


if __name__ == '__main__': main()
