#!/usr/bin/env python
"""Training step time at 1 torch thread against torch's default (one per core), idle and beside a busy process.

The question: on a CPU that other processes share, should ticketlab train a model with one thread? A parallel
region of torch's thread pool (OpenMP) ends only when every one of its threads has finished its share. When
another process holds a core, each region waits for the scheduler to hand it back; a step of a small model is
many tiny regions, so the waits can cost far more than the second thread saves.

Models, each trained by `ticketlab.train.Trainer.one_step` (fp32, SGD, the Trainer's own loader):
  lenet_300_100        on sklearn digits (1x8x8), batch 64: ticketlab's default quick-start run
  lenet_300_100_mnist  the same network on synthetic MNIST-shaped images (1x28x28), batch 64: as many parameters
                       as ResNet-20, but little work per example
  resnet20             on synthetic CIFAR-shaped images (3x32x32, 10 classes), batch 128

Conditions: `idle` and `busy` (`--competitors` extra processes that spin in a Python loop, started by this script
around each busy block). On a machine that others share there is no idle moment to wait for, so by default
(`--idle auto`) the idle blocks run with every thread of this process under SCHED_FIFO, where other processes
cannot take its cores: an idle machine, emulated (needs root; otherwise the idle condition is the machine as
it is, and the header says so). In every one of `--repeats` rounds the order of the conditions and of the thread
counts alternates (ABBA), so a change in the machine's load hits every cell alike. A block is a few untimed
steps, then timed steps (each timed on its own, up to `--block-limit` seconds but at least 3); a block's value
is its median step time. The table shows the median over rounds with the range (min..max); the paired ratios
below it compare the two thread counts within each round. Before each round the script records how many cpus
*other* processes kept busy (from /proc/stat). The header shows what `ticketlab.core.cpu_threads`, the policy
these numbers decided, picks for each model.

The last line is `ratio: X.XX` = step time of the quick-start model (lenet_300_100) on the busy machine under
torch's default thread count ÷ its step time with 1 thread (the policy's choice for it): above 1, the policy
is faster there.

    /work/venv/bin/python benchmarks/threads.py                       # with OMP_NUM_THREADS unset
    /work/venv/bin/python benchmarks/threads.py --repeats 7 --idle shared
"""
from __future__ import annotations
import argparse, contextlib, os, subprocess, sys, time
from pathlib import Path

import numpy as np, torch

from ticketlab.core import SMALL_STEP_MACS, cpu_threads, macs_per_example, seed_all
from ticketlab.data import load_dataset
from ticketlab.models import get_model
from ticketlab.train import Trainer, TrainHparams

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import busy_cpus, machine  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog='threads', description=__doc__.split('\n')[0])
    p.add_argument('--repeats', type=int, default=5, help='alternating rounds (default 5)')
    p.add_argument('--competitors', type=int, default=1, help='cpu-burning processes in the busy condition (default 1)')
    p.add_argument('--threads', default=None, help=f'comma-separated thread counts to compare (default 1,{torch.get_num_threads()}: '
                                                  "1 and torch's default)")
    p.add_argument('--block-limit', type=float, default=4, help='seconds after which a block stops timing (at least 3 steps; default 4)')
    p.add_argument('--models', default=','.join(CONFIGS), help=f'comma-separated, from {", ".join(CONFIGS)} (default all)')
    p.add_argument('--idle', default='auto', choices=('auto', 'rt', 'shared'),
                   help='how the idle condition is made: rt = this process runs under SCHED_FIFO during the idle blocks, so that '
                        "other people's processes cannot take its cores (an idle machine emulated on a shared one; needs root); "
                        'shared = as the machine is; auto = rt where permitted (default)')
    a = p.parse_args(argv)
    a.threads = sorted({int(t) for t in a.threads.split(',')} if a.threads else {1, torch.get_num_threads()})
    a.models = [m.strip() for m in a.models.split(',') if m.strip()]
    bad = [m for m in a.models if m not in CONFIGS]
    if bad: p.error(f'unknown model(s) {", ".join(bad)}; choose from {", ".join(CONFIGS)}')
    if a.repeats < 1 or a.competitors < 0 or min(a.threads) < 1: p.error('--repeats and --threads must be >= 1, --competitors >= 0')
    return a


# model -> (data set and its kwargs, batch size, warmup steps, timed steps per block)
CONFIGS = {
    'lenet_300_100': (('digits', {}), 64, 20, 300),
    'lenet_300_100_mnist': (('synthetic', dict(n_train=1024, n_test=64, num_classes=10, shape=(1, 28, 28))), 64, 10, 200),
    'resnet20': (('synthetic', dict(n_train=1024, n_test=64, num_classes=10, shape=(3, 32, 32))), 128, 1, 5),
}


def make_trainer(name:str) -> Trainer:
    (ds, kw), bs, _, _ = CONFIGS[name]
    train, _ = load_dataset(ds, **kw)
    arch = name.removesuffix('_mnist')
    hp = TrainHparams(dataset=ds, model=arch, batch_size=bs, precision='fp32', schedule='constant', training_steps='1000000it')
    seed_all(0)
    return Trainer(get_model(arch, train.num_classes, train.shape), hp, train, device='cpu')


def set_realtime(on:bool) -> bool:
    "Put every thread of this process under SCHED_FIFO (`on`) or back to SCHED_OTHER; whether it worked."
    pol, prio = (os.SCHED_FIFO, 1) if on else (os.SCHED_OTHER, 0)
    try:
        for tid in os.listdir('/proc/self/task'):
            with contextlib.suppress(ProcessLookupError): os.sched_setscheduler(int(tid), pol, os.sched_param(prio))
        return True
    except (OSError, AttributeError): return False


def block(t:Trainer, warmup:int, n:int, limit:float) -> float:
    "Median seconds per step over `n` steps (fewer, but at least 3, once `limit` seconds have passed) after `warmup` untimed ones."
    t.model.train()
    for _ in range(warmup): t.one_step()
    ts, start = [], time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter(); t.one_step(); ts.append(time.perf_counter() - t0)
        if i >= 2 and time.perf_counter() - start > limit: break
    return float(np.median(ts))


class Competitors:
    "`n` processes that spin on a cpu while the block runs."
    def __init__(self, n:int): self.n, self.procs = n, []
    def __enter__(self):
        self.procs = [subprocess.Popen([sys.executable, '-c', 'while True: pass']) for _ in range(self.n)]
        time.sleep(0.3)  # let them reach their loop
        return self
    def __exit__(self, *exc):
        for p in self.procs: p.kill()
        for p in self.procs: p.wait()
        self.procs = []


def main(argv=None):
    args = parse_args(argv)
    default_threads = torch.get_num_threads()
    print(machine('cpu'))
    print(f'default threads: {default_threads}  OMP_NUM_THREADS={os.environ.get("OMP_NUM_THREADS", "unset")}')
    print(f'models: {", ".join(args.models)}  threads compared: {args.threads}  repeats: {args.repeats}  '
          f'busy = {args.competitors} spinning process(es)')
    rt = args.idle != 'shared' and set_realtime(True) and set_realtime(False)
    if args.idle == 'rt' and not rt: sys.exit('threads: --idle rt needs the right to use SCHED_FIFO (root, or CAP_SYS_NICE)')
    print(f'idle condition: ' + ('this process under SCHED_FIFO, so other processes cannot take its cores (an idle machine, emulated)'
                                  if rt else 'the machine as it is (other processes keep running)'))
    trainers = {m: make_trainer(m) for m in args.models}
    for m, t in trainers.items():
        shape, bs = t.loader.data.shape, t.hp.batch_size
        pol = cpu_threads(t.model, shape, bs, 'cpu')
        print(f'  {m}: {sum(p.numel() for p in t.model.parameters()):,} parameters, {macs_per_example(t.model, shape)/1e6:.2f}M '
              f'multiply-adds per example, batch {bs}: {macs_per_example(t.model, shape)*bs/1e6:,.1f}M per step; '
              f'ticketlab.core.cpu_threads -> {pol if pol else "torch default"} (1 thread below {SMALL_STEP_MACS/1e6:,.0f}M per step)')
    conds = ['idle', 'busy']
    res = {(m, c, n): [] for m in args.models for c in conds for n in args.threads}
    others = []
    t_start = time.perf_counter()
    for r in range(args.repeats):
        others.append(busy_cpus(0.5))
        for c in (conds if r % 2 == 0 else conds[::-1]):
            if c == 'idle' and rt: set_realtime(True)
            with (Competitors(args.competitors) if c == 'busy' else Competitors(0)):
                for i, n in enumerate(args.threads if (r + (c == 'busy')) % 2 == 0 else args.threads[::-1]):
                    torch.set_num_threads(n)
                    for m, t in trainers.items():
                        _, _, warm, steps = CONFIGS[m]
                        res[m, c, n].append(block(t, warm, steps, args.block_limit))
            if c == 'idle' and rt: set_realtime(False)
        print(f'round {r+1}/{args.repeats} done after {time.perf_counter() - t_start:.0f} s; other processes kept '
              f'{others[-1]:.2f} cpus busy before it' if others[-1] is not None else f'round {r+1} done', flush=True)
    torch.set_num_threads(default_threads)

    o = [x for x in others if x is not None]
    if o: print(f'other processes (not this script) kept {np.median(o):.2f} cpus busy (median over rounds; range {min(o):.2f}..{max(o):.2f})')
    print(f'\nstep time, ms: median over {args.repeats} rounds of each block\'s median (range over rounds)')
    print(f'{"model":20s} {"condition":9s} ' + ' '.join(f'{f"{n} thread" + ("s" if n > 1 else ""):>24s}' for n in args.threads)
          + f'   {"1 thread vs " + str(max(args.threads)):>16s}')
    for m in args.models:
        for c in conds:
            cells, meds = [], {}
            for n in args.threads:
                v = np.array(res[m, c, n])*1000
                meds[n] = float(np.median(v))
                cells.append(f'{meds[n]:9.2f} ({v.min():.2f}..{v.max():.2f})')
            sp = meds[max(args.threads)]/meds[1] if 1 in meds else float('nan')
            verdict = f'{sp:10.2f}x faster' if sp >= 1 else f'{1/sp:10.2f}x slower'
            print(f'{m:20s} {c:9s} ' + ' '.join(f'{s:>24s}' for s in cells) + f'   {verdict}')
    # per-round paired ratios: the two thread counts ran back to back in each round, so their ratio cancels slow drifts
    print('\npaired per-round ratios (default threads ÷ 1 thread; >1 means 1 thread is faster):')
    for m in args.models:
        for c in conds:
            if 1 not in args.threads or max(args.threads) == 1: continue
            rr = np.array(res[m, c, max(args.threads)])/np.array(res[m, c, 1])
            print(f'  {m:20s} {c:5s} ' + ' '.join(f'{x:.2f}' for x in rr) + f'   median {np.median(rr):.2f}')
    if 'lenet_300_100' in args.models and 1 in args.threads and max(args.threads) > 1:
        print(f'ratio: {np.median(res["lenet_300_100", "busy", max(args.threads)])/np.median(res["lenet_300_100", "busy", 1]):.2f}')


if __name__ == '__main__': main()
