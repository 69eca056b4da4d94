#!/usr/bin/env python
"""Training throughput of N networks stepped together by `ticketlab.engine.GroupTrainer` against the same N networks
stepped one at a time by `ticketlab.train.Trainer`, side by side in one run, for N = 1, 2, 4, 8 (and 16 with `--n16`).

fused: one `GroupTrainer` over the N networks: their weights stacked, one `torch.vmap`ped `functional_call` forward
       and backward, one fused foreach SGD step (momentum, weight decay), each member with its own `Loader`.
solo:  N `Trainer`s, each stepped once per step in turn (what `train_runs(engine='off')` does, one run after another),
       each with its own `Loader`.

Both paths train the same N initial networks on CIFAR-10 (the first `--n-images` training images, uint8 in memory, pad-4
crop + flip on the device) with member i's data-order seed i, at the precision `--precision` resolves to on the device
(under bf16 the solo path uses channels_last, the fused path contiguous 5-D batches). Each path first runs `--warmup`
untimed steps (oneDNN kernels, vmap's first trace); the `--steps` timed steps are split into `--rounds` rounds that
alternate between the paths in ABBA order. Throughput is training images per second: per network (batch size x steps
/ seconds) and in aggregate (x N). Peak memory: on a GPU `torch.cuda.max_memory_allocated` of each path alone; on the
CPU each path runs alone in a fresh child process (`--memory`, the default): after loading the data it resets the
process's peak RSS (`/proc/self/clear_refs`), builds the path, trains, and reports the peak RSS above the RSS it had
before building the path (networks, optimiser state, activations, the loaders' batches; allocator caching included).
The last line is `ratio: X.XX` = fused ÷ solo aggregate images/s at the largest N of the first model.

    /work/venv/bin/python benchmarks/engine_throughput.py                        # LeNet-300-100, Conv-4, ResNet-20; N = 1, 2, 4, 8
    /work/venv/bin/python benchmarks/engine_throughput.py --n16 --device cuda    # and N = 16, on a GPU
    /work/venv/bin/python benchmarks/engine_throughput.py --threads 1 --models resnet20 --steps 20
    # a smoke run (seconds): tiny networks, two sizes, no memory children
    /work/venv/bin/python benchmarks/engine_throughput.py --width 0.25 --ns 1,2 --steps 2 --rounds 2 --warmup 1 \\
        --batch-size 16 --n-images 512 --no-memory

On two CPU cores fusing does not have to win; the point is to measure where it does, and `ticketlab.engine.engine_probe`
(what `train_runs(engine='auto')` asks) picks the fused path only where its own cached measurement found it faster.
"""
from __future__ import annotations
import argparse, contextlib, ctypes, gc, json, resource, subprocess, sys, time, warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import abba, add_device_args, cifar10_or_skip, load_average, machine, pick_device, sync, busy_cpus  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog='engine_throughput', description=__doc__.split('\n')[0])
    p.add_argument('--models', default='lenet_300_100,conv4,resnet20', help='comma-separated architectures (default lenet_300_100,conv4,resnet20)')
    p.add_argument('--ns', default='1,2,4,8', help='comma-separated group sizes N (default 1,2,4,8)')
    p.add_argument('--n16', action='store_true', help='also N = 16')
    p.add_argument('--width', type=float, default=1.0, help='width multiplier of every architecture (default 1)')
    p.add_argument('--batch-size', type=int, default=128, help='examples per step and network (default 128)')
    p.add_argument('--n-images', type=int, default=10000, help='CIFAR-10 training images the loaders draw from (default 10000)')
    p.add_argument('--precision', default='fp32', choices=('fp32',), help='training precision (the engine is fp32 only for now; default fp32)')
    p.add_argument('--steps', type=int, default=12, help='timed steps of each path per (model, N) (default 12)')
    p.add_argument('--rounds', type=int, default=4, help='ABBA rounds the timed steps are split into (default 4)')
    p.add_argument('--warmup', type=int, default=2, help='untimed steps of each path first (default 2)')
    p.add_argument('--memory', action=argparse.BooleanOptionalAction, default=True,
                   help='on the CPU, measure each path\'s peak RSS in a fresh child process (default on)')
    p.add_argument('--child', help=argparse.SUPPRESS)   # 'model,N,path': measure one path's memory and print JSON
    add_device_args(p)
    a = p.parse_args(argv)
    a.models = [m for m in a.models.split(',') if m]
    try: a.ns = sorted({int(n) for n in a.ns.split(',') if n} | ({16} if a.n16 else set()))
    except ValueError: p.error(f'--ns must be comma-separated integers, got {a.ns!r}')
    if not a.ns or min(a.ns) < 1: p.error('--ns must be >= 1')
    if min(a.steps, a.rounds, a.batch_size, a.n_images) < 1 or a.warmup < 0: p.error('--steps, --rounds, --batch-size, --n-images must be >= 1')
    if a.n_images < a.batch_size: p.error('--n-images must be at least --batch-size')
    a.rounds = min(a.rounds, a.steps)
    from ticketlab.models import model_names
    bad = [m for m in a.models if m not in model_names()]
    if bad: p.error(f'unknown model {bad[0]!r}; choose from {", ".join(model_names())}')
    return a


class Paths:
    "The two ways of stepping N networks of `model`: `fused` (one GroupTrainer) and `solo` (N Trainers)."
    def __init__(self, model:str, n:int, train, args, device, which=('fused', 'solo')):
        from ticketlab.core import seed_all
        from ticketlab.engine import GroupTrainer
        from ticketlab.models import get_model
        from ticketlab.train import HparamWarning, Trainer, TrainHparams
        self.hps = [TrainHparams(dataset='cifar10', model=model, width=args.width, batch_size=args.batch_size, augment=True,
                                 precision=args.precision, training_steps='1000000it', init_seed=i, data_seed=i) for i in range(n)]
        def net(i): seed_all(i); return get_model(model, train.num_classes, train.shape, width=args.width)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', HparamWarning)
            self.solo = [Trainer(net(i), h, train, device=device) for i, h in enumerate(self.hps)] if 'solo' in which else []
            self.group = GroupTrainer([net(i) for i in range(n)], self.hps, train, device=device) if 'fused' in which else None
        if self.group: self.group._restack(self.group.members)
        self.precision = (self.group or (self.solo[0] if self.solo else None)).precision
        self.params = sum(p.numel() for p in net(0).parameters())

    def step(self, path:str):
        if path == 'fused': self.group.one_step()
        else:
            for t in self.solo: t.one_step()


def child(args, device):
    "Build one path alone, train `--warmup + --steps` steps, print its peak RSS above the RSS after loading the data."
    from ticketlab.data import load_dataset
    model, n, path = args.child.split(',')
    train = load_dataset('cifar10', root=cifar10_or_skip('engine_throughput'))[0]
    train = train.subset(torch.arange(args.n_images))
    torch.func.vmap(torch.sin)(torch.zeros(2, 1))   # lazy imports (vmap's; torch.optim's of torch._dynamo, ~150 MiB):
    w = torch.zeros(1, requires_grad=True); w.grad = torch.zeros(1); torch.optim.SGD([w], lr=0.1, momentum=0.9).step()   # the process's, not the path's
    gc.collect()
    with contextlib.suppress(OSError): ctypes.CDLL('libc.so.6').malloc_trim(0)   # hand the decoder's freed memory back
    reset = _reset_peak()
    loaded = _status_mib('VmRSS')
    p = Paths(model, int(n), train, args, device, which=(path,))
    for _ in range(args.warmup + args.steps): p.step(path)
    peak = _status_mib('VmHWM') if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024
    print(json.dumps(dict(loaded=loaded, peak=peak, reset=reset)))


def _reset_peak() -> bool:
    "Reset this process's peak RSS (VmHWM) to its current RSS (Linux: 5 > /proc/self/clear_refs); False where it cannot."
    try: Path('/proc/self/clear_refs').write_text('5'); return True
    except OSError: return False


def _status_mib(field:str) -> float:
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith(field + ':'): return int(line.split()[1])/1024
    return float('nan')


def cpu_memory(args, model:str, n:int, path:str) -> float|None:
    "Peak MiB above the loaded data of `path` alone in a fresh process (None where the child failed)."
    cmd = [sys.executable, __file__, '--child', f'{model},{n},{path}', '--width', str(args.width), '--batch-size', str(args.batch_size),
           '--n-images', str(args.n_images), '--precision', args.precision, '--steps', str(min(args.steps, 4)), '--warmup', '1',
           '--device', 'cpu'] + (['--threads', str(args.threads)] if args.threads else [])
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0: print(f'  memory child {model} N={n} {path} failed: {r.stderr.strip().splitlines()[-1:]}'); return None
    d = json.loads(r.stdout.strip().splitlines()[-1])
    return d['peak'] - d['loaded']


def measure(model:str, n:int, train, args, device) -> dict:
    "Images/s per network and in aggregate of both paths, and their peak memory, for N = `n` networks of `model`."
    p = Paths(model, n, train, args, device)
    mem = {}
    if device.type == 'cuda':
        for k in ('solo', 'fused'):
            torch.cuda.synchronize(device); torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            for _ in range(max(1, args.warmup)): p.step(k)
            sync(device); mem[k] = (torch.cuda.max_memory_allocated(device) - base)/2**20
    else:
        for k in ('solo', 'fused'):
            for _ in range(args.warmup): p.step(k)
    per_round = [args.steps // args.rounds + (r < args.steps % args.rounds) for r in range(args.rounds)]
    t = {'fused': 0.0, 'solo': 0.0}
    for r, steps in enumerate(per_round):
        for k in abba(['fused', 'solo'], r):
            sync(device); t0 = time.perf_counter()
            for _ in range(steps): p.step(k)
            sync(device); t[k] += time.perf_counter() - t0
    if device.type == 'cpu' and args.memory: mem = {k: cpu_memory(args, model, n, k) for k in ('solo', 'fused')}
    per_net = {k: args.batch_size * args.steps / t[k] for k in t}
    return dict(model=model, n=n, params=p.params, precision=p.precision, threads=(p.group.threads if p.group.threads else torch.get_num_threads()),
                per_net=per_net, aggregate={k: n * v for k, v in per_net.items()}, mem=mem)


def main(argv=None):
    args = parse_args(argv)
    src = cifar10_or_skip('engine_throughput')
    if src is None: return
    device = pick_device(args, 'engine_throughput')
    if args.child: return child(args, device)
    from ticketlab.data import load_dataset
    train = load_dataset('cifar10', root=src)[0]    # decoded once, then cached as uint8 under ticketlab_home()/cache
    train = train.subset(torch.arange(args.n_images))
    print(machine(device))
    busy = busy_cpus()
    print(f'load average before: {load_average()}' + (f'  (other processes kept {busy:.1f} cpus busy)' if busy is not None else ''))
    print(f'{", ".join(args.models)} at width {args.width:g}, batch {args.batch_size} per network, {args.n_images} CIFAR-10 images, '
          f'precision {args.precision}; {args.steps} timed steps per path in {args.rounds} ABBA rounds after {args.warmup} untimed')
    print('fused: ticketlab.engine.GroupTrainer (vmap over stacked weights, one fused SGD step); solo: N ticketlab.train.Trainers in turn')
    memcol = 'peak MiB solo / fused' + (' (cuda allocated)' if device.type == 'cuda' else ' (RSS above data, own process)' if args.memory else ' (not measured)')
    print(f'{"model":>14s} {"N":>3s} {"prec":>5s} {"thr":>3s} | {"img/s/net solo":>14s} {"fused":>8s} | {"aggregate solo":>14s} {"fused":>8s} | '
          f'{"fused/solo":>10s} | {memcol}')
    first = None
    for model in args.models:
        for n in args.ns:
            r = measure(model, n, train, args, device)
            ratio = r['aggregate']['fused'] / r['aggregate']['solo']
            if model == args.models[0]: first = ratio
            m = r['mem']
            ms = ' / '.join(f'{m[k]:.0f}' if m.get(k) is not None else '-' for k in ('solo', 'fused')) if m else '-'
            print(f'{model:>14s} {n:3d} {r["precision"]:>5s} {r["threads"]:3d} | {r["per_net"]["solo"]:14.1f} {r["per_net"]["fused"]:8.1f} | '
                  f'{r["aggregate"]["solo"]:14.1f} {r["aggregate"]["fused"]:8.1f} | {ratio:10.2f} | {ms}', flush=True)
    print(f'load average after:  {load_average()}')
    print(f'ratio: {first:.2f}')


if __name__ == '__main__': main()
