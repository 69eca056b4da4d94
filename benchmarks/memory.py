#!/usr/bin/env python
"""Peak resident memory of ticketlab's engine and of the conventional pipeline, each alone in a fresh process.

The pipelines are those of train_throughput.py. Each child process loads CIFAR-10 (ticketlab's uint8 cache,
which both pipelines start from), notes its RSS, trains `--steps` steps and reports its peak RSS; for the
conventional pipeline also the peak RSS of its DataLoader worker (a forked process, which shares pages with
the main one, so the two are not to be added up).

    /work/venv/bin/python benchmarks/memory.py
"""
from __future__ import annotations
import argparse, json, resource, subprocess, sys, tempfile, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _rss_mib() -> float:
    "Current resident set size of this process, in MiB."
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith('VmRSS:'): return int(line.split()[1])/1024
    return float('nan')


def child(args):
    import torch
    import train_throughput as tt
    from ticketlab.data import load_dataset
    if args.threads: torch.set_num_threads(args.threads)
    ns = tt.parse_args(['--model', args.model, '--batch-size', str(args.batch_size), '--workers', str(args.workers),
                        '--baseline', args.baseline, '--precision', 'auto'])
    train, _ = load_dataset('cifar10', root=tt.find_cifar10_jpeg())
    loaded = _rss_mib()
    device = torch.device('cpu')
    with tempfile.TemporaryDirectory(prefix='ticketlab-bench-') as tmp:
        p = tt.Engine(train, ns, device) if args.only == 'engine' else tt.Conventional(train, ns, device, Path(tmp))
        try: p.run(args.steps)
        finally: p.close()
    time.sleep(0.1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024
    worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss/1024 if args.only == 'conventional' and args.workers else None
    print(json.dumps(dict(loaded=loaded, peak=peak, worker=worker)))


def main(argv=None):
    p = argparse.ArgumentParser(prog='memory', description=__doc__.split('\n')[0])
    p.add_argument('--steps', type=int, default=20, help='training steps per pipeline (default 20)')
    p.add_argument('--batch-size', type=int, default=128, help='examples per step (default 128)')
    p.add_argument('--model', default='resnet20', help='architecture (default resnet20)')
    p.add_argument('--threads', type=int, default=None, help="torch's intra-op threads (default: torch's)")
    p.add_argument('--workers', type=int, default=1, help="the conventional DataLoader's num_workers (default 1)")
    p.add_argument('--baseline', default='memory', choices=('memory', 'imagefolder'), help='the conventional data set (default memory)')
    p.add_argument('--only', choices=('engine', 'conventional'), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1: p.error('--steps and --batch-size must be >= 1')
    if args.only: return child(args)
    import torch
    from _common import cifar10_or_skip, machine
    if cifar10_or_skip('memory') is None: return
    if args.threads: torch.set_num_threads(args.threads)   # as each child process does: for the machine line
    print(machine('cpu'))
    print(f'model: {args.model}  batch size: {args.batch_size}  steps: {args.steps}  cpu  (peak RSS, MiB)')
    for name in ('engine', 'conventional'):
        cmd = [sys.executable, __file__, '--only', name] + [a for a in (argv if argv is not None else sys.argv[1:])]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode: sys.exit(f'memory: the {name} process failed:\n{r.stderr[-2000:]}')
        m = json.loads(r.stdout.strip().splitlines()[-1])
        extra = f'  worker {m["worker"]:7.1f}' if m['worker'] is not None else ''
        print(f'{name:13s} peak {m["peak"]:7.1f}  after loading the data {m["loaded"]:7.1f}  pipeline {m["peak"] - m["loaded"]:7.1f}{extra}')


if __name__ == '__main__': main()
