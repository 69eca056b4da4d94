#!/usr/bin/env python
"""Time a 30-point linear interpolation between two ResNet-20s on the 10,000 CIFAR-10 test images: ticketlab's
`interpolation_curve` against a conventional loop, side by side in one run.

engine:       `ticketlab.lmc.evaluate_states` (the engine of `interpolation_curve`) on the states `lerp_state(w1, w2, α)`:
              the test set held in memory as uint8, each evaluation batch
              normalised and moved to the device once and run through all the α-networks of a chunk (one reusable
              model per network), precision 'auto' (bf16 autocast + channels_last + BatchNorm folded into the
              convolutions where the CPU has AMX, or on a GPU).
conventional: for each α, `load_state_dict(lerp_state(w1, w2, α))` into one model and a pass over a torchvision-style
              data set (one PIL image per sample, `ToTensor` + `Normalize` per sample, a DataLoader), fp32: the data are
              re-read and re-transformed for every α.

Both compute the same thing (test loss and error at each α; the script checks that the two agree). The α grid is split
into `--rounds` chunks that alternate between the two pipelines (ABBA order), so that a change in the machine's load
hits both alike; the engine thus makes one data pass per chunk rather than one in all (conservative for the engine).
The two networks are fresh initialisations (seeds 0 and 1): the cost does not depend on the weights. The last line
printed is `ratio: X.XX` = conventional time / engine time.

    /work/venv/bin/python benchmarks/lmc_interpolation.py                  # 30 points, 10,000 images
    /work/venv/bin/python benchmarks/lmc_interpolation.py --alphas 6 --n-test 2000      # a quick look
"""
from __future__ import annotations
import argparse, sys, time
from pathlib import Path

import numpy as np, torch, torch.nn.functional as F

from ticketlab.core import resolve_precision, seed_all
from ticketlab.data import load_dataset
from ticketlab.models import get_model, model_names
from ticketlab.weights import lerp_state
from ticketlab.evaluate import evaluate_states
from ticketlab.lmc import alpha_grid
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import abba, add_device_args, cifar10_or_skip, load_average, machine, pick_device, sync  # noqa: E402
from train_throughput import PILImages   # noqa: E402  the conventional per-sample PIL dataset, shared by both benchmarks


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog='lmc_interpolation', description=__doc__.split('\n')[0])
    p.add_argument('--alphas', type=int, default=30, help='interpolation points in [0, 1] (default 30, the LMC paper\'s)')
    p.add_argument('--n-test', type=int, default=10000, help='test images (default: all 10,000)')
    p.add_argument('--rounds', type=int, default=3, help='alternating rounds the α grid is split into (default 3)')
    p.add_argument('--batch-size', type=int, default=1000, help='evaluation batch size of both pipelines (default 1000)')
    p.add_argument('--model', default='resnet20', choices=model_names(), metavar='MODEL', help='architecture (default resnet20)')
    p.add_argument('--precision', default='auto', choices=('auto', 'fp32', 'bf16'), help="the engine's precision (default auto)")
    p.add_argument('--workers', type=int, default=1, help="the conventional DataLoader's num_workers (default 1)")
    add_device_args(p)
    a = p.parse_args(argv)
    if a.alphas < 2: p.error('--alphas must be >= 2')
    if not 1 <= a.n_test <= 10000: p.error('--n-test must be in [1, 10000]')
    if a.rounds < 1 or a.batch_size < 1 or a.workers < 0: p.error('--rounds and --batch-size must be >= 1, --workers >= 0')
    a.rounds = min(a.rounds, a.alphas)
    return a


def conventional(model, w1, w2, alphas, test, args, device):
    "One model; for each α: load the interpolated weights, then a DataLoader pass with per-sample transforms, fp32."
    import torchvision.transforms as T
    ds = PILImages(test.x, test.y, T.Compose([T.ToTensor(), T.Normalize(test.mean, test.std)]))
    dl = torch.utils.data.DataLoader(ds, batch_size=args.batch_size, shuffle=False, num_workers=args.workers)
    model = model.to(device).eval()
    rows = []
    with torch.no_grad():
        for a in alphas:
            model.load_state_dict(lerp_state(w1, w2, float(a)))
            loss, wrong, n = 0.0, 0, 0
            for x, y in dl:
                x, y = x.to(device), y.to(device)
                out = model(x)
                loss += F.cross_entropy(out, y, reduction='sum').item(); wrong += (out.argmax(1) != y).sum().item(); n += len(y)
            rows.append((float(a), loss / n, wrong / n))
    return rows


def main(argv=None):
    args = parse_args(argv)
    src = cifar10_or_skip('lmc_interpolation')
    if src is None: return
    device = pick_device(args, 'lmc_interpolation')
    _, test = load_dataset('cifar10', root=src)  # decoded once, then cached as uint8 under ticketlab_home()/cache
    test = test.subset(torch.arange(args.n_test))
    nets = []
    for s in (0, 1):
        seed_all(s); nets.append(get_model(args.model, test.num_classes, test.shape))
    model, (w1, w2) = nets[0], [{k: v.detach().clone() for k, v in n.state_dict().items()} for n in nets]
    alphas = alpha_grid(args.alphas)
    chunks = np.array_split(alphas, args.rounds)

    print(machine(device))
    print(f'{args.alphas}-point interpolation between two {args.model}s on {len(test)} CIFAR-10 test images, batch size {args.batch_size}, '
          f'{args.rounds} alternating rounds')
    print(f'engine:       ticketlab.lmc.evaluate_states over the α grid, precision {args.precision} -> {resolve_precision(args.precision, device)}')
    print(f'conventional: per-α load_state_dict + DataLoader(num_workers={args.workers}) over per-sample PIL transforms, fp32')

    # warm-up (oneDNN kernels, worker start, BN folding), not timed
    evaluate_states(model, [w1, w2], test.subset(torch.arange(min(len(test), 200))), precision=args.precision, device=device)
    conventional(model, w1, w2, [0.5], test.subset(torch.arange(min(len(test), 200))), args, device)

    print(f'load average before: {load_average()}')
    t = {'engine': 0.0, 'conventional': 0.0}
    eng, conv = [], []
    for r, chunk in enumerate(chunks):
        for k in abba(['engine', 'conventional'], r):
            sync(device); t0 = time.perf_counter()
            if k == 'engine':
                res = evaluate_states(model, (lerp_state(w1, w2, float(x)) for x in chunk), test, batch_size=args.batch_size,
                                      device=device, precision=args.precision, chunk=len(chunk))
                eng += [(float(x), r['loss'], r['error']) for x, r in zip(chunk, res)]
            else: conv += conventional(model, w1, w2, chunk, test, args, device)
            sync(device); t[k] += time.perf_counter() - t0
    print(f'load average after:  {load_average()}')
    eng, conv = sorted(eng), sorted(conv)
    assert [x for x, *_ in eng] == [x for x, *_ in conv] == list(alphas), 'the two pipelines evaluated different grids'
    dl = max(abs(a[1] - b[1]) / max(1.0, abs(b[1])) for a, b in zip(eng, conv))
    de = max(abs(a[2] - b[2]) for a, b in zip(eng, conv))
    print(f'agreement: max relative loss difference {dl:.2e}, max error difference {de:.4f} (engine {resolve_precision(args.precision, device)} vs fp32)')
    n = args.alphas * len(test)
    for k in ('engine', 'conventional'): print(f'{k + ":":14s}{t[k]:8.1f} s   {n / t[k]:8.1f} network-images/s')
    print(f'ratio: {t["conventional"] / t["engine"]:.2f}')


if __name__ == '__main__': main()
