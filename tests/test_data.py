"Loader formats, batcher invariants and transforms of ticketlab.data and ticketlab.loader (no network)."
import copy, dataclasses, hashlib, json, os, pickle, struct, tarfile
from pathlib import Path
import numpy as np, pytest, torch, torch.nn.functional as F
import torchvision
from PIL import Image
from hypothesis import given, settings, strategies as st

import ticketlab.data as D
from ticketlab.data import (ImageData, load_dataset, dataset_names, find_cifar10_jpeg, channel_stats,
                            class_balanced_subset, corrupt_labels, random_labels, blur, rotation_task, STATS)
from ticketlab.loader import Loader, eval_batches, rotate_batch, augment_crop_flip, _normaliser

SESSION_HOME = os.environ['TICKETLAB_HOME']    # the test session's scratch home (tests/conftest.py), never the user's

CIFAR10_CLASSES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck']


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    "Every test gets its own TICKETLAB_HOME (cache) unless it asks for the real one."
    monkeypatch.setenv('TICKETLAB_HOME', str(tmp_path/'home'))
    return tmp_path/'home'


@pytest.fixture
def no_md5(monkeypatch):
    "torchvision checks CIFAR files against the real files' md5; tiny stand-ins only need to exist."
    monkeypatch.setattr(torchvision.datasets.cifar, 'check_integrity', lambda fpath, md5=None: os.path.isfile(fpath))


def _rand_u8(rng, *shape): return rng.integers(0, 256, shape, dtype=np.uint8)


def _write_tree(root, splits=('train', 'test'), classes=('cat', 'dog', 'emu'), n=3, size=(8, 8), ext='png', colors=None):
    "A tiny ImageFolder tree; returns {split: [(class, uint8 HWC array)]} in sorted order."
    rng, out = np.random.default_rng(0), {}
    for s in splits:
        out[s] = []
        for ci, c in enumerate(classes):
            (root/s/c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                a = np.full((*size, 3), colors[ci], np.uint8) if colors else _rand_u8(rng, *size, 3)
                Image.fromarray(a).save(root/s/c/f'{i:03d}.{ext}'); out[s].append((c, a))
    return out


# ---------------------------------------------------------------- formats

def test_registry():
    assert dataset_names() == ['cifar10', 'cifar100', 'cinic10', 'digits', 'imagefolder', 'mnist', 'synthetic']
    with pytest.raises(ValueError, match='choose one of cifar10, cifar100, cinic10, digits, imagefolder, mnist, synthetic'):
        load_dataset('svhn')


def _write_cifar10(root, n=4):
    rng, base = np.random.default_rng(1), root/'cifar-10-batches-py'
    base.mkdir(parents=True)
    batches = {}
    for f in [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']:
        d = {'batch_label': f, 'data': _rand_u8(rng, n, 3072), 'labels': rng.integers(0, 10, n).tolist(), 'filenames': [f'{i}.png' for i in range(n)]}
        batches[f] = d
        (base/f).write_bytes(pickle.dumps(d))
    (base/'batches.meta').write_bytes(pickle.dumps({'label_names': CIFAR10_CLASSES, 'num_cases_per_batch': n, 'num_vis': 3072}))
    return batches


def test_cifar10_pickle_batches(tmp_path, no_md5):
    b = _write_cifar10(tmp_path)
    train, test = load_dataset('cifar10', root=tmp_path, download=False)
    assert (len(train), len(test), train.shape, train.classes) == (20, 4, (3, 32, 32), CIFAR10_CLASSES)
    want = np.concatenate([b[f'data_batch_{i}']['data'] for i in range(1, 6)]).reshape(-1, 3, 32, 32)
    assert torch.equal(train.x, torch.from_numpy(want))
    assert train.y.tolist() == sum((b[f'data_batch_{i}']['labels'] for i in range(1, 6)), [])
    assert torch.equal(test.x, torch.from_numpy(b['test_batch']['data'].reshape(-1, 3, 32, 32)))
    assert (train.mean, train.std) == STATS['cifar10'] and train.name == 'cifar10'


def test_cifar100_pickle_files(tmp_path, no_md5):
    rng, base = np.random.default_rng(2), tmp_path/'cifar-100-python'
    base.mkdir()
    fine = [f'class{i:02d}' for i in range(100)]
    data = {}
    for f, n in [('train', 6), ('test', 3)]:
        data[f] = {'data': _rand_u8(rng, n, 3072), 'fine_labels': rng.integers(0, 100, n).tolist(), 'coarse_labels': rng.integers(0, 20, n).tolist()}
        (base/f).write_bytes(pickle.dumps(data[f]))
    (base/'meta').write_bytes(pickle.dumps({'fine_label_names': fine, 'coarse_label_names': [f'c{i}' for i in range(20)]}))
    train, test = load_dataset('cifar100', root=tmp_path, download=False)
    assert (len(train), len(test), train.num_classes, train.classes[:2]) == (6, 3, 100, ['class00', 'class01'])
    assert torch.equal(train.x, torch.from_numpy(data['train']['data'].reshape(-1, 3, 32, 32)))
    assert test.y.tolist() == data['test']['fine_labels']
    assert train.mean == STATS['cifar100'][0]


def _idx(path, arr):
    "Write `arr` (uint8) in the idx-ubyte format: magic 0x0000 08 ndim, big-endian dims, data."
    path.write_bytes(struct.pack('>I', 0x800 | arr.ndim) + struct.pack(f'>{arr.ndim}I', *arr.shape) + arr.tobytes())


def test_mnist_idx_files(tmp_path):
    rng, raw = np.random.default_rng(3), tmp_path/'MNIST'/'raw'
    raw.mkdir(parents=True)
    xs = {'train': _rand_u8(rng, 7, 28, 28), 't10k': _rand_u8(rng, 5, 28, 28)}
    ys = {'train': rng.integers(0, 10, 7).astype(np.uint8), 't10k': rng.integers(0, 10, 5).astype(np.uint8)}
    for s in xs:
        _idx(raw/f'{s}-images-idx3-ubyte', xs[s]); _idx(raw/f'{s}-labels-idx1-ubyte', ys[s])
    train, test = load_dataset('mnist', root=tmp_path, download=False)
    assert (len(train), len(test), train.shape, train.classes) == (7, 5, (1, 28, 28), [str(i) for i in range(10)])
    assert torch.equal(train.x[:, 0], torch.from_numpy(xs['train'])) and test.y.tolist() == ys['t10k'].tolist()
    assert (train.mean, train.std) == STATS['mnist']


def test_cinic10_tree(tmp_path):
    w = _write_tree(tmp_path/'cinic', splits=('train', 'valid', 'test'), classes=CIFAR10_CLASSES[:3], n=2, size=(32, 32))
    train, test = load_dataset('cinic10', root=tmp_path/'cinic')
    assert (len(train), len(test), train.shape, train.classes) == (6, 6, (3, 32, 32), CIFAR10_CLASSES[:3])
    assert torch.equal(train.x, torch.stack([torch.from_numpy(a).permute(2, 0, 1) for _, a in w['train']]))  # png is lossless
    assert torch.equal(test.x, torch.stack([torch.from_numpy(a).permute(2, 0, 1) for _, a in w['test']]))   # not 'valid'
    assert train.y.tolist() == [0, 0, 1, 1, 2, 2] and train.mean == STATS['cinic10'][0]


def test_imagefolder_jpeg(tmp_path):
    colors = [(250, 10, 10), (10, 250, 10), (10, 10, 250)]
    _write_tree(tmp_path/'jpg', classes=('b', 'a', 'c'), n=2, size=(5, 7), ext='jpg', colors=colors)
    (tmp_path/'jpg'/'train'/'a'/'.DS_Store').write_bytes(b'junk')
    (tmp_path/'jpg'/'train'/'a'/'notes.txt').write_text('not an image')
    train, test = load_dataset('imagefolder', root=tmp_path/'jpg')
    assert train.classes == ['a', 'b', 'c'] and train.shape == (3, 5, 7) and len(train) == len(test) == 6
    assert train.y.tolist() == [0, 0, 1, 1, 2, 2]
    want = torch.tensor([colors[1], colors[0], colors[2]]).repeat_interleave(2, 0)[:, :, None, None].float()
    assert (train.x.float() - want).abs().max() <= 4  # jpeg round trip of flat colours
    m, s = channel_stats(train.x)
    assert train.mean == m and train.std == s and test.mean == m  # computed from the train split


def test_imagefolder_grey_and_errors(tmp_path):
    for s in ('train', 'test'):
        (tmp_path/'g'/s/'x').mkdir(parents=True)
        Image.fromarray(np.full((4, 4), 9, np.uint8), 'L').save(tmp_path/'g'/s/'x'/'0.png')
    train, _ = load_dataset('imagefolder', root=tmp_path/'g')
    assert train.shape == (1, 4, 4) and train.x.unique().tolist() == [9]
    Image.fromarray(np.zeros((5, 4, 3), np.uint8)).save(tmp_path/'g'/'train'/'x'/'1.png')
    with pytest.raises(ValueError, match='same size'): load_dataset('imagefolder', root=tmp_path/'g')
    with pytest.raises(FileNotFoundError, match='pass root='): load_dataset('imagefolder')
    with pytest.raises(FileNotFoundError, match='no image folder'): load_dataset('imagefolder', root=tmp_path/'missing')
    (tmp_path/'g2'/'train').mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match='not an ImageFolder tree'): load_dataset('imagefolder', root=tmp_path/'g2')
    (tmp_path/'g'/'test'/'y').mkdir(); Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path/'g'/'test'/'y'/'0.png')
    (tmp_path/'g'/'train'/'x'/'1.png').unlink()
    with pytest.raises(ValueError, match=r"classes \['y'\] of split 'test' are not in split 'train'"): load_dataset('imagefolder', root=tmp_path/'g')


def test_tarball_equals_folder(tmp_path):
    _write_tree(tmp_path/'tiny'/'cifar10-jpeg', classes=CIFAR10_CLASSES[:2], n=2, size=(32, 32), ext='jpg')
    tgz = tmp_path/'tiny.tar.gz'
    with tarfile.open(tgz, 'w:gz') as tf: tf.add(tmp_path/'tiny'/'cifar10-jpeg', arcname='cifar10-jpeg')
    a_tr, a_te = load_dataset('cifar10', root=tgz)
    b_tr, b_te = load_dataset('cifar10', root=tmp_path/'tiny')           # the split folders one level down
    c_tr, _ = load_dataset('imagefolder', root=tgz)
    assert a_tr.classes == CIFAR10_CLASSES[:2] and len(a_tr) == len(a_te) == 4
    assert torch.equal(a_tr.x, b_tr.x) and torch.equal(a_te.y, b_te.y) and torch.equal(a_tr.x, c_tr.x)
    assert a_tr.mean == STATS['cifar10'][0] and c_tr.mean == channel_stats(c_tr.x)[0]


def test_cifar_unavailable_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match='pass download=True, or root='): load_dataset('cifar10', root=tmp_path, download=False)
    def offline(*a, **k): raise OSError('[Errno -3] Temporary failure in name resolution')
    monkeypatch.setattr(torchvision.datasets.cifar, 'download_and_extract_archive', offline)
    with pytest.raises(RuntimeError, match=r'could not download.*find_cifar10_jpeg'): load_dataset('cifar10', root=tmp_path)
    with pytest.raises(FileNotFoundError, match='does not exist'): load_dataset('cinic10', root=tmp_path/'nope')


def test_cache_reuse_and_invalidation(tmp_path, home, monkeypatch):
    _write_tree(tmp_path/'t', n=2)
    first, _ = load_dataset('imagefolder', root=tmp_path/'t')
    assert len(list((home/'cache').glob('imagefolder-*.pt'))) == 1
    real = D._decode_all
    def boom(*a): raise AssertionError('decoded again instead of using the cache')
    monkeypatch.setattr(D, '_decode_all', boom)
    again, _ = load_dataset('imagefolder', root=tmp_path/'t')
    assert torch.equal(first.x, again.x)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path/'t'/'train'/'cat'/'000.png')   # change a file
    with pytest.raises(AssertionError, match='decoded again'): load_dataset('imagefolder', root=tmp_path/'t')
    monkeypatch.setattr(D, '_decode_all', real)
    changed, _ = load_dataset('imagefolder', root=tmp_path/'t')
    assert changed.x[0].sum() == 0 and not torch.equal(changed.x, first.x)
    assert not list((home/'cache').glob('*.tmp'))


class _Evil:
    "Unpickling this runs code (writes a marker file): a cache file must never be loaded with full unpickling."
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (Path.write_text, (Path(self.marker), 'pwned'))


def test_crafted_cache_file_runs_nothing_and_is_rebuilt(tmp_path, home):
    _write_tree(tmp_path/'t', n=2)
    first, _ = load_dataset('imagefolder', root=tmp_path/'t')
    cache, = (home/'cache').glob('imagefolder-*.pt')
    marker = tmp_path/'marker'
    torch.save({'classes': _Evil(marker)}, cache)
    again, _ = load_dataset('imagefolder', root=tmp_path/'t')
    assert not marker.exists() and torch.equal(again.x, first.x)          # refused (weights_only), decoded again


def test_digits_and_synthetic():
    tr, te = load_dataset('digits')
    assert (len(tr), len(te), tr.shape, tr.x.dtype) == (1437, 360, (1, 8, 8), torch.uint8)
    assert tr.x.max() == 255 and set(tr.x.unique().tolist()) <= {round(v*255/16) for v in range(17)}
    assert torch.equal(load_dataset('digits')[1].y, te.y)
    a, _ = load_dataset('synthetic', n_train=30, num_classes=3, shape=(2, 5, 4), seed=1)
    b, _ = load_dataset('synthetic', n_train=30, num_classes=3, shape=(2, 5, 4), seed=2)
    assert a.shape == (2, 5, 4) and torch.bincount(a.y).tolist() == [10]*3 and not torch.equal(a.x, b.x)


def test_find_cifar10_jpeg_env(tmp_path, monkeypatch):
    f = tmp_path/'c.tar.gz'; f.write_bytes(b'')
    monkeypatch.setenv('TICKETLAB_CIFAR10_JPEG', str(f))
    assert find_cifar10_jpeg() == f.resolve()
    monkeypatch.setenv('TICKETLAB_CIFAR10_JPEG', str(tmp_path/'absent.tar.gz'))
    monkeypatch.chdir(tmp_path)
    beside_checkout = Path(D.__file__).resolve().parent.parent.parent/'shared'/'data'/'cifar10-jpeg.tar.gz'
    found = find_cifar10_jpeg()   # shared/ may be a link: compare where both paths lead
    if beside_checkout.exists(): assert found is not None and found.resolve() == beside_checkout.resolve()
    else: assert found is None


# ---------------------------------------------------------------- the batcher

@pytest.fixture(scope='module')
def syn():
    return load_dataset('synthetic', n_train=100, n_test=10, num_classes=5, shape=(3, 6, 6))[0]


def test_batch_is_pure_function_of_seed_and_step(syn):
    a, b = Loader(syn, 16, seed=3, augment=True, device='cpu'), Loader(syn, 16, seed=3, augment=True, device='cpu')
    for s in range(20): a.batch(s)                          # a has walked; b jumps straight to the steps
    for s in (19, 7, 40, 6):
        (xa, ya), (xb, yb) = a.batch(s), b.batch(s)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    c = Loader(syn, 16, seed=4, augment=True, device='cpu')
    assert not torch.equal(a.indices(5), c.indices(5)) and not torch.equal(a.batch(5)[0], c.batch(5)[0])
    assert not torch.equal(a.indices(0), a.indices(a.iterations_per_epoch))   # epochs differ


def test_batch_matches_epoch_permutation(syn):
    ld = Loader(syn, 16, seed=0, device='cpu')
    ipe = ld.iterations_per_epoch
    assert ipe == 6
    for e in range(3):
        perm = ld.epoch_order(e)
        got = torch.cat([ld.indices(s) for s in range(e*ipe, (e+1)*ipe)])
        assert torch.equal(got, perm[:ipe*16]) and got.unique().numel() == ipe*16
        x, y = ld.batch(e*ipe + 2)
        idx = perm[32:48]
        want = (syn.x[idx].float()/255 - torch.tensor(syn.mean).view(-1, 1, 1))/torch.tensor(syn.std).view(-1, 1, 1)
        assert torch.allclose(x, want, atol=1e-5) and torch.equal(y, syn.y[idx])
    full = Loader(syn, 16, seed=0, drop_last=False, device='cpu')
    assert full.iterations_per_epoch == 7
    assert sorted(torch.cat([full.indices(s) for s in range(7, 14)]).tolist()) == list(range(100))   # every example once
    assert [len(b[1]) for b in full.epoch(1)] == [16]*6 + [4]


def _reference_crop_flip(img, dy, dx, flip, pad=4):
    H, W = img.shape[1:]
    out = F.pad(img, (pad, pad, pad, pad))[:, dy:dy+H, dx:dx+W]
    return out.flip(-1) if flip else out


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3), st.integers(1, 9), st.integers(1, 9), st.data())
def test_augment_crop_flip_matches_reference(B, H, W, data):
    x = torch.randint(1, 256, (B, 2, H, W), dtype=torch.uint8)
    dy = torch.tensor(data.draw(st.lists(st.integers(0, 8), min_size=B, max_size=B)))
    dx = torch.tensor(data.draw(st.lists(st.integers(0, 8), min_size=B, max_size=B)))
    fl = torch.tensor(data.draw(st.lists(st.booleans(), min_size=B, max_size=B)))
    got = augment_crop_flip(x, dy, dx, fl)
    for b in range(B): assert torch.equal(got[b], _reference_crop_flip(x[b], dy[b].item(), dx[b].item(), fl[b].item()))


def test_loader_augmentation_is_a_valid_crop_flip(syn):
    plain, aug = Loader(syn, 20, seed=1, device='cpu'), Loader(syn, 20, seed=1, augment=True, device='cpu')
    x = syn.x[plain.indices(3)]
    # undo the normalisation to recover uint8 pixels of the augmented batch
    scale, shift = _normaliser(syn, 'cpu')
    xa = ((aug.batch(3)[0] + shift)/scale).round().to(torch.uint8)
    seen = set()
    for b in range(len(x)):
        fits = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (False, True)
                if torch.equal(xa[b], _reference_crop_flip(x[b], dy, dx, f))]
        assert fits, f'example {b} is not a pad-4 crop (+flip) of its source'
        seen.add(fits[0])
    assert len(seen) > 5                                                     # the draws vary across the batch
    assert torch.equal(aug.batch(3)[1], plain.batch(3)[1])                  # same examples, only augmented


def test_loader_validation_and_eval(syn):
    with pytest.raises(ValueError, match='drop_last=False'): Loader(syn, 101, 0, device='cpu')
    with pytest.raises(ValueError, match='batch_size must be >= 1'): Loader(syn, 0, 0, device='cpu')
    bs = list(eval_batches(syn, 30, device='cpu'))
    assert [len(y) for _, y in bs] == [30, 30, 30, 10] and torch.equal(torch.cat([y for _, y in bs]), syn.y)
    x, _ = next(eval_batches(syn, 30, device='cpu', memory_format=torch.channels_last))
    assert x.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_loader_same_batches_on_gpu(syn):
    c, g = Loader(syn, 16, 5, augment=True, device='cpu'), Loader(syn, 16, 5, augment=True, device='cuda')
    for s in (0, 9):
        assert torch.allclose(c.batch(s)[0], g.batch(s)[0].cpu(), atol=1e-5) and torch.equal(c.batch(s)[1], g.batch(s)[1].cpu())


# ---------------------------------------------------------------- subsets and transforms

def test_class_balanced_subset(syn):
    s = class_balanced_subset(syn, 7, seed=0)
    assert torch.bincount(s.y).tolist() == [7]*5 and s.mean == syn.mean
    assert torch.equal(s.x, class_balanced_subset(syn, 7, seed=0).x) and not torch.equal(s.x, class_balanced_subset(syn, 7, seed=1).x)
    with pytest.raises(ValueError, match='smallest class'): class_balanced_subset(syn, 21, 0)


@settings(max_examples=40, deadline=None)
@given(st.floats(0, 1), st.integers(0, 5), st.integers(2, 7), st.integers(1, 60))
def test_corrupt_labels_different_mode_exact(fraction, seed, K, N):
    y = torch.arange(N) % K
    d = ImageData(torch.zeros(N, 1, 2, 2, dtype=torch.uint8), y, [str(i) for i in range(K)], (0.,), (1.,))
    noisy, changed = corrupt_labels(d, fraction, seed, mode='different')
    assert changed.sum().item() == round(fraction*N)
    assert torch.equal(noisy.y != y, changed) and torch.equal(d.y, y)        # changed ones differ; input untouched
    assert noisy.y.min() >= 0 and noisy.y.max() < K


@settings(max_examples=40, deadline=None)
@given(st.floats(0, 1), st.integers(0, 5), st.integers(2, 7), st.integers(1, 60))
def test_corrupt_labels_uniform_mode(fraction, seed, K, N):
    y = torch.arange(N) % K
    d = ImageData(torch.zeros(N, 1, 2, 2, dtype=torch.uint8), y, [str(i) for i in range(K)], (0.,), (1.,))
    noisy, changed = corrupt_labels(d, fraction, seed)
    assert changed.sum().item() <= round(fraction*N)                        # a redrawn label may be the true one
    assert torch.equal(noisy.y != y, changed) and noisy.y.min() >= 0 and noisy.y.max() < K


def test_corrupt_labels_as_the_data_diet_paper_draws_them():
    "data_diet.txt App. A: 10%/50% selected, a new label uniform over the 10 classes: ~9%/45% actually corrupted."
    N, K = 50_000, 10
    d = ImageData(torch.zeros(N, 1, 1, 1, dtype=torch.uint8), torch.arange(N) % K, [str(i) for i in range(K)], (0.,), (1.,))
    for frac, expect in ((0.1, 0.09), (0.5, 0.45)):
        noisy, changed = corrupt_labels(d, frac, seed=0)
        assert abs(changed.float().mean().item() - expect) < 0.005
        redrawn = noisy.y[changed]
        assert (torch.bincount(redrawn, minlength=K).float() / len(redrawn) - 1/K).abs().max() < 0.02


def test_corrupt_labels_uniform_and_validation():
    N, K = 20000, 5
    d = ImageData(torch.zeros(N, 1, 1, 1, dtype=torch.uint8), torch.zeros(N, dtype=torch.int64), list('abcde'), (0.,), (1.,))
    noisy, changed = corrupt_labels(d, 1.0, seed=0, mode='different')
    counts = torch.bincount(noisy.y, minlength=K)
    assert counts[0] == 0 and (counts[1:].float()/N - 0.25).abs().max() < 0.02
    rl = random_labels(d, seed=0)
    assert ((torch.bincount(rl.y, minlength=K).float()/N - 0.2).abs().max() < 0.02) and rl.name.endswith('+random_labels')
    for bad in (-0.1, 1.1):
        with pytest.raises(ValueError, match=r'fraction must be in \[0, 1\]'): corrupt_labels(d, bad, 0)
    with pytest.raises(ValueError, match='choose one of uniform, different'): corrupt_labels(d, 0.1, 0, mode='swap')


def test_blur(syn):
    assert torch.equal(blur(syn, 1).x, syn.x)
    b = blur(syn, 2)
    assert b.x.shape == syn.x.shape and b.x.dtype == torch.uint8 and b.name == 'synthetic+blur2'
    assert b.x.float().var() < syn.x.float().var()
    flat = ImageData(torch.full((2, 3, 6, 6), 77, dtype=torch.uint8), torch.tensor([0, 1]), ['a', 'b'], (0.,)*3, (1.,)*3)
    assert (blur(flat, 3).x == 77).all()
    # factor 2 of a 2x2 checkerboard block pattern averages to its mean everywhere
    cb = ImageData(torch.tensor([[0, 200], [200, 0]], dtype=torch.uint8).repeat(3, 3)[None, None], torch.tensor([0]), ['a'], (0.,), (1.,))
    assert (blur(cb, 2).x == 100).all()
    for bad in (0, 7, 1.5):
        with pytest.raises(ValueError, match='factor must be an integer'): blur(syn, bad)


def test_rotation_task():
    x = torch.arange(2*1*3*3, dtype=torch.uint8).view(2, 1, 3, 3)
    d = ImageData(x, torch.tensor([4, 2]), [str(i) for i in range(5)], (0.,), (1.,), 'toy')
    r = rotation_task(d)
    assert len(r) == 2 and r.classes == ['0', '90', '180', '270'] and r.rotation and not d.rotation
    rb = rotate_batch(x.repeat(2, 1, 1, 1), torch.tensor([0, 1, 2, 3]))
    for k in range(4): assert torch.equal(rb[k], torch.rot90(x[k % 2], k, (1, 2)))
    assert torch.rot90(x, 1, (2, 3))[0, 0, 0].tolist() == [2, 5, 8]          # 90 degrees counter-clockwise
    ev = list(eval_batches(r, 10, device='cpu'))
    assert [y.tolist() for _, y in ev] == [[0, 0], [1, 1], [2, 2], [3, 3]]
    with pytest.raises(ValueError, match='square'): rotation_task(ImageData(torch.zeros(1, 1, 2, 3, dtype=torch.uint8), torch.tensor([0]), ['a'], (0.,), (1.,)))


def test_rotation_drawn_after_crop_and_flip_one_per_presentation(syn):
    "Each example is presented once per epoch (N, not 4N), in one rotation, applied after the crop and flip."
    r = rotation_task(syn)
    ld = Loader(r, batch_size=10, seed=3, augment=True, device='cpu')
    assert ld.iterations_per_epoch == len(syn) // 10
    plain = Loader(syn, batch_size=10, seed=3, augment=True, device='cpu')
    seen = []
    for step in range(ld.iterations_per_epoch):
        (xr, k), (xa, _) = ld.batch(step), plain.batch(step)
        assert torch.equal(xr, rotate_batch(xa, k))                         # rotation of the augmented image
        seen.append(ld.indices(step))
    assert sorted(torch.cat(seen).tolist()) == list(range(len(syn)))
    ks = torch.cat([ld.batch(s)[1] for s in range(ld.iterations_per_epoch)])
    assert torch.bincount(ks, minlength=4).min() > 0


def test_imagedata_to_and_subset(syn):
    s = syn.subset(torch.tensor([3, 1])).to('cpu')
    assert torch.equal(s.y, syn.y[[3, 1]]) and s.mean == syn.mean and len(syn) == 100



# ---------------------------------------------------------------- data identity

def _toy(y=(0, 1, 2, 0), **kw):
    "A hand-built ImageData (no identity): known by its content."
    x = torch.arange(len(y)*1*2*2, dtype=torch.uint8).view(len(y), 1, 2, 2)
    return ImageData(x, torch.tensor(y), ['a', 'b', 'c'], (0.5,), (0.25,), **kw)


def test_identity_steps_per_transform(syn):
    root = syn.identity
    assert len(root) == 1 and root[0][:4] == ('dataset', 'synthetic', 'train', 100) and len(root[0][4]) == 12
    idx = torch.tensor([3, 1, 4])
    sha = hashlib.sha256(np.asarray(idx.numpy(), '<i8').tobytes()).hexdigest()[:16]
    cases = {syn.subset(idx): ('subset', 3, sha),
             syn.subset(idx, step=('mine', 'x', 1)): ('mine', 'x', 1),
             class_balanced_subset(syn, 4, seed=2): ('class_balanced_subset', 4, 2),
             corrupt_labels(syn, 0.2, seed=3)[0]: ('label_noise', 0.2, 3, 'uniform'),
             corrupt_labels(syn, 1, seed=np.int64(3), mode='different')[0]: ('label_noise', 1.0, 3, 'different'),
             random_labels(syn, seed=4): ('random_labels', 4),
             blur(syn, 2): ('blur', 2), blur(syn, 1): ('blur', 1),
             rotation_task(syn): ('rotation',)}
    for d, step in cases.items():
        assert d.identity == root + (step,), (d.identity, step)              # the input's identity plus one step
        assert json.loads(json.dumps(d.identity)) == [list(s) for s in d.identity]   # JSON-able, round trips
        assert d.id != syn.id and len(d.id) == 16 and int(d.id, 16) >= 0
    assert syn.to('cpu').identity == root and syn.to('cpu').id == syn.id
    chain = rotation_task(blur(corrupt_labels(class_balanced_subset(syn, 4, 0), 0.1, 3)[0], 2))
    assert [s[0] for s in chain.identity] == ['dataset', 'class_balanced_subset', 'label_noise', 'blur', 'rotation']
    assert chain.describe() == "synthetic/train+class_balanced_subset(n=4, seed=0)+label_noise(fraction=0.1, seed=3, mode='uniform')+blur(factor=2)+rotation"


def test_same_recipe_same_id_other_seed_other_id(syn):
    a, b = class_balanced_subset(syn, 5, seed=0), class_balanced_subset(syn, 5, seed=1)
    assert a.id == class_balanced_subset(syn, 5, seed=0).id and a.id != b.id
    assert a.to('cpu').id == a.id
    n0, n1 = corrupt_labels(syn, 0.3, seed=0)[0], corrupt_labels(syn, 0.3, seed=1)[0]
    assert n0.id == corrupt_labels(syn, 0.3, seed=0)[0].id and n0.id != n1.id
    assert corrupt_labels(syn, 0.3, 0, 'different')[0].id != n0.id and random_labels(syn, 0).id != corrupt_labels(syn, 1.0, 0)[0].id
    assert blur(syn, 2).id != blur(syn, 3).id
    # the order of transforms is part of the identity
    assert blur(class_balanced_subset(syn, 5, 0), 2).id != class_balanced_subset(blur(syn, 2), 5, 0).id


def test_disjoint_subsets_of_equal_size_never_share_an_id(syn):
    "Two runs on different subsets can never share a store entry: their data ids differ."
    first, second = syn.subset(torch.arange(50)), syn.subset(torch.arange(50, 100))
    assert len(first) == len(second) and first.id != second.id
    assert syn.subset(torch.arange(50)).id == first.id                                  # the same subset: the same id
    assert syn.subset(torch.arange(100) < 50).id == first.id                            # as a boolean mask
    assert syn.subset(torch.arange(50).flip(0)).id != first.id                          # another order is another data order
    ids = {syn.subset(torch.randperm(100, generator=torch.Generator().manual_seed(s))[:20]).id for s in range(50)}
    assert len(ids) == 50
    other, _ = load_dataset('synthetic', n_train=100, n_test=10, num_classes=5, shape=(3, 6, 6), seed=1)
    assert other.subset(torch.arange(50)).id != first.id                                # same indices, another parent
    assert _toy().subset([0, 1]).id != _toy((1, 1, 2, 0)).subset([0, 1]).id              # ... also for hand-built parents


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 99), min_size=1, max_size=30), st.lists(st.integers(0, 99), min_size=1, max_size=30))
def test_subset_ids_differ_exactly_when_indices_differ(i, j):
    d = _toy(tuple(k % 3 for k in range(100)))
    assert (d.subset(i).id == d.subset(j).id) == (i == j)


def test_content_hash_fallback_for_hand_built_data():
    d = _toy()
    assert d.identity == () and d.describe().startswith('content#')
    assert d.id == _toy().id and d.id == _toy(name='another').id                          # content, not the display name
    assert _toy((0, 1, 2, 1)).id != d.id                                                # one label
    x = d.x.clone(); x[0, 0, 0, 0] += 1
    assert ImageData(x, d.y, d.classes, d.mean, d.std).id != d.id                       # one pixel
    assert ImageData(d.x, d.y, ['a', 'b', 'z'], d.mean, d.std).id != d.id               # a class name
    assert _toy(rotation=True).id != d.id and ImageData(d.x, d.y, d.classes, (0.4,), d.std).id != d.id
    h = d.id
    d.y[3] = 1; assert d.id != h and d.id == _toy((0, 1, 2, 1)).id                      # the cache sees in-place changes
    d.x = d.x.clone(); d.x[1] = 0; assert d.id != _toy((0, 1, 2, 1)).id                 # ... and replaced tensors
    e = _toy(); h = e.id
    r = dataclasses.replace(e, y=torch.tensor([2, 2, 2, 2]))
    assert r.id != h and r.id == _toy((2, 2, 2, 2)).id                                  # a replaced copy does not inherit the cache
    assert e.to('cpu').id == h and e.subset([0, 1]).identity[0] == ('content', e._content_hash()[:16])
    assert pickle.loads(pickle.dumps(e)).id == h and copy.deepcopy(e).id == h


PINNED = {'content': 'a26d4b548306b68d', 'toy': '7d5795598f822c4c', 'chain': '0aa61997d8bbc0db', 'built': '83884deffaf07de2'}


def test_ids_are_pinned():
    "Ids name runs in the store: a change of the hashing would orphan every stored run."
    d = _toy()
    assert d._content_hash()[:16] == PINNED['content'] and d.id == PINNED['toy']
    chain = rotation_task(corrupt_labels(d.subset([2, 0, 1]), 0.5, seed=1)[0])
    assert chain.id == PINNED['chain']
    built = ImageData(d.x, d.y, d.classes, d.mean, d.std, identity=(('dataset', 'toy', 'train', 4, 'abc'), ('blur', 2)))
    assert built.id == PINNED['built']
    spec = dict(identity=[['dataset', 'toy', 'train', 4, 'abc'], ['blur', 2]], rotation=False, num_classes=3, n=4, shape=[1, 2, 2],
                mean=[0.5], std=[0.25])                                                  # the formula, spelled out
    assert hashlib.sha256(json.dumps(spec, sort_keys=True, separators=(',', ':')).encode()).hexdigest()[:16] == built.id


def test_loaded_identity(tmp_path, no_md5):
    train, test = load_dataset('digits')
    assert train.identity == (('dataset', 'digits', 'train', 1437, train._content_hash()[:12]),) and test.identity[0][2] == 'test'
    assert D.load_digits()[0].id == train.id and load_dataset('digits')[0].id == train.id   # direct or through the registry
    assert train.id != test.id and load_dataset('digits', seed=1)[0].id != train.id
    # two image folders with the same classes and labels but other images: other ids
    _write_tree(tmp_path/'a', n=2); _write_tree(tmp_path/'b', n=2, colors=[(1, 2, 3), (4, 5, 6), (7, 8, 9)])
    (ta, _), (tb, _) = load_dataset('imagefolder', root=tmp_path/'a'), load_dataset('imagefolder', root=tmp_path/'b')
    assert torch.equal(ta.y, tb.y) and ta.identity[0][:4] == tb.identity[0][:4] == ('dataset', 'imagefolder', 'train', 6)
    assert ta.id != tb.id and load_dataset('imagefolder', root=tmp_path/'a')[0].id == ta.id
    _write_cifar10(tmp_path/'c')
    assert D.load_cifar10(tmp_path/'c', download=False)[0].identity[0][:4] == ('dataset', 'cifar10', 'train', 20)
    # a loader registered by a user gets identities too, unless it gives its own
    @D.register_dataset('_test_mine')
    def _mine(root=None, download=False):
        d = _toy(); return d, d.derive(('half',), x=d.x // 2)
    try:
        tr, te = load_dataset('_test_mine')
        assert tr.identity[0][:3] == ('dataset', 'data', 'train') and te.identity[1] == ('half',)
    finally: del D.DATASETS['_test_mine']


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_ids_do_not_depend_on_the_device(syn):
    d = _toy()
    assert d.to('cuda').id == d.id and syn.to('cuda').id == syn.id
    on_gpu = ImageData(d.x.cuda(), d.y.cuda(), d.classes, d.mean, d.std)                # built by hand on the device
    assert on_gpu.id == d.id and on_gpu.subset([0, 2]).id == d.subset([0, 2]).id
    assert class_balanced_subset(syn.to('cuda'), 5, 0).id == class_balanced_subset(syn, 5, 0).id


def test_identity_validation():
    for bad, msg in ((('blur', 2), 'tuple \\(op, \\*args\\)'), ((('blur', [2]),), 'str, int, float'), (((3, 'x'),), 'op a string'),
                     ((('noise', float('inf')),), 'finite'), ('dataset', 'tuple of steps')):
        with pytest.raises(ValueError, match=msg): _toy(identity=bad)
    assert _toy(identity=[['x', np.int64(3), np.float32(0.5), np.bool_(True), None]]).identity == (('x', 3, 0.5, True, None),)
    with pytest.raises(ValueError, match='not identity='): _toy().derive(('x',), identity=())


# ---------------------------------------------------------------- the real archive

def test_real_cifar10_jpeg(monkeypatch):
    src = find_cifar10_jpeg()
    if src is None: pytest.skip('shared CIFAR-10 archive not found: set TICKETLAB_CIFAR10_JPEG or put it at ../shared/data/cifar10-jpeg.tar.gz')
    monkeypatch.setenv('TICKETLAB_HOME', SESSION_HOME)                      # the session's scratch cache, shared with other tests
    train, test = load_dataset('cifar10', root=src)
    assert (len(train), len(test), train.shape, train.classes) == (50_000, 10_000, (3, 32, 32), CIFAR10_CLASSES)
    assert torch.bincount(train.y).tolist() == [5000]*10 and torch.bincount(test.y).tolist() == [1000]*10
    mean, std = channel_stats(train.x)
    assert np.allclose(mean, (0.4913, 0.4821, 0.4465), atol=1e-3) and np.allclose(std, (0.2452, 0.2428, 0.2606), atol=2e-3)
    assert list((D.ticketlab_home()/'cache').glob('cifar10-folder-*.pt'))   # decoded once, cached
    again, _ = load_dataset('cifar10', root=src)
    assert torch.equal(again.x[::997], train.x[::997]) and torch.equal(again.y, train.y)
    assert train.identity[0][:4] == ('dataset', 'cifar10', 'train', 50_000) and again.id == train.id != test.id
