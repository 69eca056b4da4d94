"Pinned identities: changing how runs are hashed would silently orphan every stored run."
import argparse, pytest
from ticketlab.core import Step, Hparams, hp
from ticketlab.train import TrainHparams

PINNED = {
    'defaults': (TrainHparams(), '44136fa355b3678a'),
    'cifar10-resnet20': (TrainHparams(model='resnet20', dataset='cifar10', lr=0.1, schedule='multistep',
                                      milestones='80ep,120ep', training_steps='160ep', batch_size=128,
                                      augment=True), 'b9be80c1357b2b42'),
    'data-seed': (TrainHparams(data_seed=3), '8ce7229ac9fa9d9c'),
}

@pytest.mark.parametrize('name', PINNED)
def test_pinned_hashes(name):
    hps, h = PINNED[name]
    assert hps.hash == h

def test_where_is_not_what():
    assert TrainHparams(data_root='/somewhere').hash == TrainHparams().hash

def test_new_default_field_keeps_old_hashes():
    from dataclasses import dataclass, make_dataclass, field
    base = TrainHparams(lr=0.2)
    Extended = make_dataclass('Extended', [('new_knob', float, hp(1.0, 'a new no-op knob'))], bases=(TrainHparams,), frozen=True)
    assert Extended(lr=0.2).hash == base.hash
    assert Extended(lr=0.2, new_knob=2.0).hash != base.hash

def test_cli_roundtrip_every_field():
    p = TrainHparams.add_args(argparse.ArgumentParser())
    ns = p.parse_args(['--model', 'resnet20', '--dataset', 'cifar10', '--no-augment', '--nesterov',
                       '--training-steps', '1ep200it', '--width', '0.5', '--batch-size', '32'])
    h = TrainHparams.from_args(ns)
    assert (h.model, h.nesterov, h.augment, h.width, h.batch_size) == ('resnet20', True, False, 0.5, 32)

@pytest.mark.parametrize('s,ipe,it', [('2000it', 391, 2000), ('10ep', 391, 3910), ('1ep200it', 391, 591), ('0it', 7, 0)])
def test_step_parse(s, ipe, it):
    assert Step.from_str(s, ipe).it == it
    assert Step.from_str(str(Step.from_str(s, ipe)), ipe).it == it

@pytest.mark.parametrize('bad', ['2000', 'ep', '1.5ep', '-3it', '10 epochs', ''])
def test_step_errors(bad):
    with pytest.raises(ValueError, match="'<N>it'"): Step.from_str(bad, 10)


# --- precision policy: 'auto' is chosen by a cached measurement, never by a CPU flag alone ---
import json, time, torch
from ticketlab import core
from ticketlab.core import (resolve_precision, precision_probe, precision_key, memory_format, autocast, time_precisions,
                            BF16_MIN_SPEEDUP, LAYOUT_MIN_SPEEDUP)
from ticketlab.data import load_dataset
from ticketlab.models import get_model
from ticketlab.runs import train_run
from ticketlab.store import Store
from ticketlab.train import Callback, Trainer, TrainHparams

@pytest.fixture
def probe_home(tmp_path, monkeypatch):
    "A fresh TICKETLAB_HOME, no in-process memo, no override, and a fake timer that counts its calls."
    monkeypatch.setenv('TICKETLAB_HOME', str(tmp_path))
    monkeypatch.delenv('TICKETLAB_PRECISION', raising=False)
    monkeypatch.setattr(core, '_PROBES', {})
    calls, times = [], {'fp32': 2.0, 'fp32_cl': 2.0, 'bf16': 1.0}
    def fake_timer(): calls.append(dict(times)); return dict(times)
    monkeypatch.setattr(core, 'time_precisions', fake_timer)
    return tmp_path, calls, times

def test_probe_measures_once_and_caches(probe_home):
    home, calls, _ = probe_home
    p = precision_probe('cpu')
    path = home/'precision'/f'{precision_key()}.json'
    assert path.is_file() and len(calls) == 1
    on_disk = json.loads(path.read_text())
    assert on_disk['choice'] == p['choice'] == 'bf16'
    assert (on_disk['fp32_s'], on_disk['bf16_s'], on_disk['torch'], on_disk['cpu']) == (2.0, 1.0, torch.__version__, core.cpu_model())
    assert {'threads', 'date', 'capability', 'speedup', 'min_speedup', 'min_layout_speedup'} <= set(on_disk)
    assert (on_disk['fp32_contiguous_s'], on_disk['fp32_channels_last_s'], on_disk['fp32_layout']) == (2.0, 2.0, 'contiguous')
    assert precision_probe('cpu') == p and resolve_precision('auto', 'cpu') == 'bf16' and len(calls) == 1
    core._PROBES.clear()                                     # a new process: reads the file, does not measure
    assert precision_probe('cpu')['choice'] == 'bf16' and len(calls) == 1
    precision_probe('cpu', refresh=True)
    assert len(calls) == 2
    assert [f.name for f in (home/'precision').iterdir()] == [path.name]   # atomic write: no temporary files left

def test_concurrent_probes_measure_once_and_agree(probe_home, monkeypatch):
    "Two processes starting on a fresh store at once: the second waits for the first's measurement and reads it."
    import threading
    home, calls, _ = probe_home
    slow = core.time_precisions
    def slower(): time.sleep(0.5); return slow()
    monkeypatch.setattr(core, 'time_precisions', slower)
    got = []
    def probe(): core._PROBES.clear(); got.append(precision_probe('cpu'))   # each thread opens its own lock: as two processes would
    ts = [threading.Thread(target=probe) for _ in range(2)]
    for t in ts: t.start()
    for t in ts: t.join()
    assert len(calls) == 1 and len(got) == 2 and got[0]['choice'] == got[1]['choice'] == 'bf16'
    assert got[0]['date'] == got[1]['date']                  # one measurement, read by both

def test_corrupt_cache_is_measured_again(probe_home):
    home, calls, _ = probe_home
    path = home/'precision'/f'{precision_key()}.json'
    path.parent.mkdir(parents=True); path.write_text('{"choice": "fp1')
    assert precision_probe('cpu')['choice'] == 'bf16' and len(calls) == 1
    assert json.loads(path.read_text())['choice'] == 'bf16'

def test_cache_without_a_layout_is_measured_again(probe_home):
    "A probe cached before the fp32 layout was measured (no fp32_layout) is measured anew, and the layout is kept."
    home, calls, _ = probe_home
    path = home/'precision'/f'{precision_key()}.json'
    path.parent.mkdir(parents=True); path.write_text(json.dumps(dict(choice='fp32', fp32_s=1.0, bf16_s=2.0)))
    assert precision_probe('cpu')['fp32_layout'] == 'contiguous' and len(calls) == 1
    assert json.loads(path.read_text())['fp32_layout'] == 'contiguous'

@pytest.mark.parametrize('fp32_s,fp32_cl_s,bf16_s,layout,choice', [
    (2.0, 1.0, 1.0, 'channels_last', 'fp32'),          # bf16 is compared with fp32 in fp32's faster layout: a tie, fp32
    (2.0, 1.0, 0.5, 'channels_last', 'bf16'),
    (1.0, 1.0/(LAYOUT_MIN_SPEEDUP*0.99), 5.0, 'contiguous', 'fp32'),   # channels_last must be clearly faster
    (1.0, 1.0/(LAYOUT_MIN_SPEEDUP*1.01), 5.0, 'channels_last', 'fp32'),
    (1.0, 2.0, 5.0, 'contiguous', 'fp32')])
def test_fp32_layout_follows_the_measurement(probe_home, monkeypatch, fp32_s, fp32_cl_s, bf16_s, layout, choice):
    _, calls, times = probe_home
    times.update(fp32=fp32_s, fp32_cl=fp32_cl_s, bf16=bf16_s)
    p = precision_probe('cpu')
    assert (p['fp32_layout'], p['choice'], len(calls)) == (layout, choice, 1)
    assert p['fp32_s'] == (fp32_cl_s if layout == 'channels_last' else fp32_s)
    want = torch.channels_last if choice == 'bf16' or layout == 'channels_last' else torch.contiguous_format
    assert memory_format('auto', 'cpu') == want
    assert memory_format('fp32', 'cpu') == torch.contiguous_format                # explicit fp32: contiguous, as always
    assert memory_format('auto', 'cpu', 'contiguous') == torch.contiguous_format  # a fixed layout wins
    monkeypatch.setenv('TICKETLAB_PRECISION', 'fp32')
    assert memory_format('auto', 'cpu') == torch.contiguous_format                # pinned by the environment: not measured

def test_trainer_and_run_record_the_layout(probe_home):
    "The trainer uses the measured fp32 layout under 'auto' (an explicit fp32 stays contiguous), and a run records it."
    home, _, times = probe_home
    times.update(fp32=2.0, fp32_cl=1.0, bf16=4.0)
    hp = TrainHparams(model='conv2', dataset='synthetic', training_steps='2it', batch_size=8)
    train, _ = load_dataset('synthetic')
    t = Trainer(get_model('conv2', train.num_classes, train.shape), hp, train, device='cpu')
    assert (t.precision, t.layout) == ('fp32', 'channels_last')
    assert next(p for p in t.model.parameters() if p.ndim == 4).is_contiguous(memory_format=torch.channels_last)
    t = Trainer(get_model('conv2', train.num_classes, train.shape), hp.replace(precision='fp32'), train, device='cpu')
    assert t.layout == 'contiguous'
    run = train_run(hp, Store(home/'runs'), progress=False)
    assert run.record()['resolved_layout'] == run.summary()['layout'] == 'channels_last'

def test_resuming_in_another_layout_warns(probe_home):
    "A run begun in one fp32 layout and resumed in the other (the probe measured again) says so, naming the fix."
    home, _, times = probe_home
    class Crash(Callback):
        def after_step(self, t):
            if t.step == 4: raise KeyboardInterrupt
    hp, store = TrainHparams(training_steps='8it', batch_size=64), Store(home/'runs')
    times.update(fp32=2.0, fp32_cl=1.0, bf16=4.0)
    with pytest.raises(KeyboardInterrupt): train_run(hp, store, progress=False, save_every='2it', callbacks=[Crash()])
    times.update(fp32=1.0, fp32_cl=2.0)
    assert precision_probe('cpu', refresh=True)['fp32_layout'] == 'contiguous'
    with pytest.warns(UserWarning, match="began in channels_last memory and resumes in contiguous.*pass layout='channels_last'"):
        run = train_run(hp, store, progress=False, save_every='2it')
    assert run.summary()['layout'] == 'contiguous' and run.record()['resolved_layout'] == 'channels_last'

def test_key_names_cpu_model_and_torch_version(probe_home, monkeypatch):
    _, calls, _ = probe_home
    k0 = precision_key()
    precision_probe('cpu')
    monkeypatch.setattr(core, 'cpu_model', lambda: 'Fake CPU 9000')
    k1 = precision_key()
    assert k1 != k0 and k1.startswith('Fake-CPU-9000-torch')
    monkeypatch.setattr(torch, '__version__', '9.9.9')
    k2 = precision_key()
    assert k2 != k1 and 'torch9.9.9' in k2
    p = precision_probe('cpu')                               # another CPU / torch: measured anew, in its own file
    assert len(calls) == 2 and p['key'] == k2 and p['cpu'] == 'Fake CPU 9000' and p['torch'] == '9.9.9'

@pytest.mark.parametrize('fp32_s,bf16_s,want', [(2.0, 1.0, 'bf16'), (1.0, 2.0, 'fp32'), (1.0, 5.0, 'fp32'),
                                                (BF16_MIN_SPEEDUP*0.99, 1.0, 'fp32'), (BF16_MIN_SPEEDUP*1.01, 1.0, 'bf16')])
def test_auto_follows_the_measurement(probe_home, fp32_s, bf16_s, want):
    _, calls, times = probe_home
    times.update(fp32=fp32_s, bf16=bf16_s)
    assert resolve_precision('auto', 'cpu') == want and len(calls) == 1
    assert memory_format('auto', 'cpu') == (torch.channels_last if want == 'bf16' else torch.contiguous_format)   # fp32 layouts tie: contiguous
    with autocast('auto', 'cpu'): dt = (torch.ones(2, 2) @ torch.ones(2, 2)).dtype
    assert dt == (torch.bfloat16 if want == 'bf16' else torch.float32)

def test_auto_never_follows_a_flag(probe_home, monkeypatch):
    _, _, times = probe_home
    monkeypatch.setattr(core, 'cpu_has_amx', lambda: True)  # AMX claimed, but bf16 measured slower: fp32
    times.update(fp32=1.0, bf16=3.0)
    assert resolve_precision('auto', 'cpu') == 'fp32'

@pytest.mark.parametrize('env,want', [('bf16', 'bf16'), ('fp32', 'fp32'), (' FP32 ', 'fp32')])
def test_env_override(probe_home, monkeypatch, env, want):
    _, calls, _ = probe_home
    monkeypatch.setenv('TICKETLAB_PRECISION', env)
    assert resolve_precision('auto', 'cpu') == want and calls == []   # fixed without measuring
    assert resolve_precision('fp32', 'cpu') == 'fp32' and resolve_precision('bf16', 'cpu') == 'bf16'  # explicit wins

def test_env_auto_measures(probe_home, monkeypatch):
    _, calls, _ = probe_home
    monkeypatch.setenv('TICKETLAB_PRECISION', 'auto')
    assert resolve_precision('auto', 'cpu') == 'bf16' and len(calls) == 1

def test_bad_precisions_name_the_choices(probe_home, monkeypatch):
    with pytest.raises(ValueError, match='choose one of auto, fp32, bf16'): resolve_precision('fp16', 'cpu')
    monkeypatch.setenv('TICKETLAB_PRECISION', 'half')
    with pytest.raises(ValueError, match=r"TICKETLAB_PRECISION='half': choose one of auto, fp32, bf16"): resolve_precision('auto', 'cpu')

def test_cuda_uses_bf16_support_without_measuring(probe_home, monkeypatch):
    _, calls, _ = probe_home
    monkeypatch.setattr(torch.cuda, 'get_device_name', lambda d=None: 'Fake GPU')
    for ok, want in ((True, 'bf16'), (False, 'fp32')):
        monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda ok=ok: ok)
        assert resolve_precision('auto', 'cuda') == want
    assert calls == []

def test_time_precisions_is_real_and_harmless():
    "The real measurement (one step of each): positive times, the global RNG untouched, fine under no_grad."
    s = torch.random.get_rng_state()
    with torch.no_grad(): t = time_precisions(budget=0, max_reps=1)
    assert set(t) == {'fp32', 'fp32_cl', 'bf16'} and min(t.values()) > 0
    assert torch.equal(torch.random.get_rng_state(), s)


# --- thread policy: one CPU thread for a small step (measured in benchmarks/threads.py) ---
from torch import nn
from ticketlab.core import macs_per_example, cpu_threads, thread_policy, SMALL_STEP_MACS

def _lenet(): return nn.Sequential(nn.Flatten(), nn.Linear(64, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10))

@pytest.fixture
def user_chose_nothing(monkeypatch):
    monkeypatch.delenv('OMP_NUM_THREADS', raising=False)
    n = torch.get_num_threads()
    monkeypatch.setattr(core, '_TORCH_THREADS', n)
    yield n
    torch.set_num_threads(n)

def test_macs_count_conv_and_linear():
    conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 1, stride=2), nn.Flatten(), nn.Linear(4*16*16, 10))
    assert macs_per_example(conv, (3, 32, 32)) == 32*32*8*27 + 16*16*4*8 + 4*16*16*10
    conv.train()
    macs_per_example(conv, (3, 32, 32))
    assert conv.training and conv[1].num_batches_tracked.item() == 0   # counting neither changes the mode nor BN statistics

def test_small_step_gets_one_thread(user_chose_nothing):
    n = user_chose_nothing
    assert cpu_threads(_lenet(), (1, 8, 8), 64, 'cpu') == 1
    with thread_policy(_lenet(), (1, 8, 8), 64, 'cpu') as k: assert k == torch.get_num_threads() == 1
    assert torch.get_num_threads() == n

def test_threshold_is_on_work_per_step_not_parameters(user_chose_nothing, monkeypatch):
    m = _lenet()
    work = macs_per_example(m, (1, 8, 8))
    monkeypatch.setattr(core, 'SMALL_STEP_MACS', work*64)
    assert cpu_threads(m, (1, 8, 8), 63, 'cpu') == 1 and cpu_threads(m, (1, 8, 8), 64, 'cpu') is None

def test_large_step_other_devices_and_user_choice_keep_threads(user_chose_nothing, monkeypatch):
    n = user_chose_nothing
    big = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.Conv2d(64, 64, 3, padding=1))
    assert macs_per_example(big, (3, 32, 32))*128 >= SMALL_STEP_MACS and cpu_threads(big, (3, 32, 32), 128, 'cpu') is None
    assert cpu_threads(_lenet(), (1, 8, 8), 64, 'cuda') is None
    monkeypatch.setenv('OMP_NUM_THREADS', '2')
    assert cpu_threads(_lenet(), (1, 8, 8), 64, 'cpu') is None
    monkeypatch.delenv('OMP_NUM_THREADS')
    torch.set_num_threads(n + 1)                 # the user changed torch's count after importing ticketlab
    with thread_policy(_lenet(), (1, 8, 8), 64, 'cpu') as k: assert k == n + 1
    assert torch.get_num_threads() == n + 1

def test_thread_policy_restores_on_error(user_chose_nothing):
    n = user_chose_nothing
    with pytest.raises(RuntimeError, match='boom'):
        with thread_policy(_lenet(), (1, 8, 8), 64, 'cpu'): raise RuntimeError('boom')
    assert torch.get_num_threads() == n
