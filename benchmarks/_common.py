"""What every benchmark in this folder shares: the machine line, the CIFAR-10 skip, `--device`/`--threads`, timing helpers.

The scripts are run as `python benchmarks/X.py`, so Python puts this folder first on `sys.path`; each script also
inserts it itself (so that importing a script from elsewhere works too) and then does `from _common import ...`.
"""
from __future__ import annotations
import argparse, os, platform, sys, time
from pathlib import Path

import torch

from ticketlab.core import cpu_model, default_device
from ticketlab.data import find_cifar10_jpeg
from ticketlab.train import Callback

CPU_FLAGS = ('avx2', 'avx512f', 'avx512_bf16', 'amx_tile', 'amx_bf16')   # what decides fp32 vs bf16 speed on a CPU


def sync(device:torch.device):
    "Wait for the device's queued work (a no-op on the CPU), so that a timer around it measures the work."
    if device.type == 'cuda': torch.cuda.synchronize(device)


def cpu_flags(names=CPU_FLAGS) -> str:
    "Which of the CPU feature flags that matter for bf16 this CPU has (from /proc/cpuinfo), e.g. 'avx2:yes amx_tile:no'."
    try: have = set(next(l for l in Path('/proc/cpuinfo').read_text().splitlines() if l.startswith('flags')).split(':', 1)[1].split())
    except (OSError, StopIteration): return 'unknown'
    return ' '.join(f'{n}:{"yes" if n in have else "no"}' for n in names)


def machine(device:torch.device|str='cpu') -> str:
    "One line for the top of a result: CPU model, cpus, bf16-related flags, torch version and ISA, threads, device (and GPU name)."
    device = torch.device(device)
    dev = f'{device} ({torch.cuda.get_device_name(device)})' if device.type == 'cuda' else str(device)
    return (f'cpu: {cpu_model()} ({platform.machine()}, {os.cpu_count()} cpus)  flags: {cpu_flags()}  '
            f'torch: {torch.__version__} ({torch.backends.cpu.get_cpu_capability()})  threads: {torch.get_num_threads()}  device: {dev}')


def cifar10_or_skip(prog:str) -> Path|None:
    "The CIFAR-10 JPEG archive, or None after printing that `prog` is skipped and how to point it at the archive."
    src = find_cifar10_jpeg()
    if src is None:
        print(f'{prog}: skipped: the CIFAR-10 JPEG archive was not found (ticketlab.data.find_cifar10_jpeg() looks at '
              '$TICKETLAB_CIFAR10_JPEG and ../shared/data/cifar10-jpeg.tar.gz beside the checkout); '
              'set TICKETLAB_CIFAR10_JPEG to its path')
    return src


def add_device_args(p:argparse.ArgumentParser):
    "The `--device` and `--threads` options every benchmark takes."
    p.add_argument('--device', default=None, help='cpu or cuda (default: cuda if available)')
    p.add_argument('--threads', type=int, default=None, help="torch's intra-op threads (default: torch's, one per core)")


def pick_device(args:argparse.Namespace, prog:str) -> torch.device:
    "Apply `args.threads`, then the device `args.device` names (default: cuda if available); exit saying why where it cannot be used."
    if args.threads is not None:
        if args.threads < 1: sys.exit(f'{prog}: --threads must be >= 1')
        torch.set_num_threads(args.threads)
    try: device = torch.device(args.device) if args.device else default_device()
    except RuntimeError: sys.exit(f'{prog}: --device {args.device!r} is not a device; use cpu or cuda')
    if device.type == 'cuda' and not torch.cuda.is_available(): sys.exit(f'{prog}: --device {args.device}, but CUDA is not available')
    if device.type not in ('cpu', 'cuda'): sys.exit(f'{prog}: --device {args.device}: use cpu or cuda')
    return device


def load_average() -> str:
    "The 1, 5 and 15 minute load averages, e.g. '2.98 2.09 2.90'."
    return ' '.join(f'{v:.2f}' for v in os.getloadavg())


def busy_cpus(seconds:float=1.0) -> float|None:
    "How many cpus other processes kept busy over the next `seconds` (from /proc/stat; None where it is absent)."
    def snap():
        v = [int(o) for o in Path('/proc/stat').read_text().split('\n', 1)[0].split()[1:]]
        return sum(v[:8]), v[3] + v[4]  # total and idle + iowait jiffies (guest time is already in user)
    try: (t0, i0), _, (t1, i1) = snap(), time.sleep(seconds), snap()
    except (OSError, ValueError, IndexError): return None
    return (os.cpu_count() or 1)*(1 - (i1 - i0)/max(t1 - t0, 1))


def abba(names:list, r:int) -> list:
    "The order the pipelines `names` run in round `r`: forwards in even rounds, backwards in odd ones (ABBA)."
    return list(names) if r % 2 == 0 else list(names)[::-1]


class StepTimer(Callback):
    "Record `(wall seconds, this process's cpu seconds)` of each of a Trainer's steps (after a device sync)."
    def __init__(self, device:torch.device): self.device, self.times = device, []
    def before_step(self, t): sync(self.device); self.t0 = (time.perf_counter(), time.process_time())
    def after_step(self, t):
        sync(self.device)
        self.times.append((time.perf_counter() - self.t0[0], time.process_time() - self.t0[1]))

    def steps(self, t, n:int) -> list[float]:
        "Train the Trainer `t`, which has this timer among its callbacks, `n` more steps; the wall seconds of each."
        self.times = []
        t.fit(start=t.step, end=t.step + n)
        return [wall for wall, _ in self.times]


def step_flops(model:torch.nn.Module, x:torch.Tensor, y:torch.Tensor) -> int:
    "Floating-point operations of one training step's forward and backward (convolutions and matmuls, as torch's FlopCounterMode counts them)."
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as fc:
        torch.nn.functional.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return fc.get_total_flops()


def matmul_rate(device:torch.device, dtype:torch.dtype=torch.float32, n:int=2048, reps:int=5) -> float:
    "FLOP/s of an n×n matmul in `dtype` on `device`, the best of `reps` timings: the practical peak that a step's convolutions cannot beat."
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    for _ in range(2): a @ b
    best = float('inf')
    for _ in range(reps):
        sync(device); t0 = time.perf_counter(); a @ b; sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2*n**3/best
