"The run store: reuse, exact resume after SIGKILL, corrupt checkpoints."
import hashlib, io, json, os, signal, subprocess, sys, textwrap, warnings
import pytest, torch
from ticketlab.store import Store, load_checkpoint, CorruptCheckpointError
from ticketlab.runs import train_run
from ticketlab.train import TrainHparams, Callback
from ticketlab.masks import UnsafeFileError
from ticketlab.core import resolve_precision

HP = TrainHparams(training_steps='4ep', precision='fp32')

KILLER = textwrap.dedent('''
    import os, signal, sys, torch
    torch.set_num_threads(1)
    from ticketlab.store import Store
    from ticketlab.runs import train_run
    from ticketlab.train import TrainHparams, Callback
    class Kill(Callback):
        order = 99   # after the resume checkpoint of this step is written
        def after_step(self, t):
            if t.step == int(sys.argv[2]): os.kill(os.getpid(), signal.SIGKILL)
    train_run(TrainHparams(training_steps='4ep', precision='fp32'), Store(sys.argv[1]), progress=False,
              save_every='5it', callbacks=[Kill()])
''')

def test_killed_run_resumes_to_identical_weights(tmp_path):
    torch.set_num_threads(1)
    full = train_run(HP, Store(tmp_path/'full'), progress=False)
    p = subprocess.run([sys.executable, '-c', KILLER, str(tmp_path/'killed'), '37'], capture_output=True, text=True)
    assert p.returncode == -signal.SIGKILL, p.stderr
    run = Store(tmp_path/'killed').run('train', HP)
    assert not run.done and load_checkpoint(run.path/'resume.pt')['step'] == 35
    resumed = train_run(HP, Store(tmp_path/'killed'), progress=False)
    assert resumed.done
    a, b = full.weights(full.checkpoint_steps()[-1]), resumed.weights(resumed.checkpoint_steps()[-1])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert full.summary()['test_accuracy'] == resumed.summary()['test_accuracy']

def test_finished_run_is_reused(tmp_path):
    r = train_run(HP, Store(tmp_path), progress=False)
    mtime = (r.path/'done.json').stat().st_mtime_ns
    assert train_run(HP, Store(tmp_path), progress=False).path == r.path
    assert (r.path/'done.json').stat().st_mtime_ns == mtime

def test_corrupt_checkpoint_is_reported(tmp_path):
    r = train_run(HP.replace(training_steps='1ep'), Store(tmp_path), ['0it'], progress=False)
    p = r.checkpoint_path(0)
    raw = bytearray(p.read_bytes()); raw[len(raw)//2] ^= 1; p.write_bytes(bytes(raw))
    with pytest.raises(CorruptCheckpointError, match='checksum'): r.load_checkpoint(0)
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(CorruptCheckpointError): r.load_checkpoint(0)

def test_checkpoints_saved_atomically_leave_no_temp_files(tmp_path):
    r = train_run(HP.replace(training_steps='1ep'), Store(tmp_path), ['0it', '10it'], progress=False)
    assert not [p for p in r.path.rglob('*') if p.name.endswith('.tmp')]
    assert r.checkpoint_steps() == [0, 10, 22]

class _RunsShell:
    "Unpickling this runs `touch marker` (what a malicious checkpoint would do)."
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (os.system, (f'touch {self.marker}',))

def _with_valid_header(state) -> bytes:
    buf = io.BytesIO(); torch.save(state, buf); payload = buf.getvalue()
    return b'TLCKPT1\n' + hashlib.sha256(payload).digest() + payload

def test_checkpoint_that_would_run_code_is_refused(tmp_path):
    marker, p = tmp_path/'ran', tmp_path/'ckpt.pt'
    raw = _with_valid_header({'model': {'w': torch.zeros(2)}, 'step': _RunsShell(marker)})
    torch.load(io.BytesIO(raw[8 + 32:]), weights_only=False)     # the payload is live: an unsafe load runs it ...
    assert marker.exists(); marker.unlink()
    p.write_bytes(raw)
    with pytest.raises(UnsafeFileError, match='nothing in it was run') as e: load_checkpoint(p)
    assert str(p) in str(e.value) and 'system' in str(e.value)
    assert not marker.exists()                                   # ... load_checkpoint refuses it, valid checksum or not

def test_unsafe_resume_checkpoint_stops_the_run(tmp_path):
    hp = HP.replace(training_steps='1ep')
    class Crash(Callback):
        def after_step(self, t):
            if t.step == 12: raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt): train_run(hp, Store(tmp_path), progress=False, save_every='5it', eval_every='5it', callbacks=[Crash()])
    run = Store(tmp_path).run('train', hp)
    state = load_checkpoint(run.path/'resume.pt')                # what the store writes loads with weights_only=True
    assert state['step'] == 10 and isinstance(state['history'], list) and state['history'][0]['split'] == 'test'
    marker = tmp_path/'ran'
    (run.path/'resume.pt').write_bytes(_with_valid_header(dict(state, history=[_RunsShell(marker)])))
    with pytest.raises(UnsafeFileError): train_run(hp, Store(tmp_path), progress=False)
    assert not marker.exists() and (run.path/'resume.pt').exists() and not run.done   # not set aside, not used

def test_resolved_precision_recorded_without_changing_the_hash(tmp_path):
    hp = HP.replace(training_steps='1ep', precision='auto')
    r = train_run(hp, Store(tmp_path), progress=False, device='cpu')
    assert r.name == hp.hash
    rec = r.record()
    assert rec['resolved_precision'] == r.summary()['precision'] == resolve_precision('auto', 'cpu')
    assert rec['device'] == 'cpu' and 'resolved_precision' not in rec['hparams']

def test_resume_under_another_precision_warns(tmp_path):
    hp = HP.replace(training_steps='1ep', precision='auto')
    class Crash(Callback):
        def after_step(self, t):
            if t.step == 12: raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt): train_run(hp, Store(tmp_path), progress=False, save_every='5it', callbacks=[Crash()], device='cpu')
    run = Store(tmp_path).run('train', hp)
    rec = run.record()
    other = 'fp32' if rec['resolved_precision'] == 'bf16' else 'bf16'
    (run.path/'hparams.json').write_text(json.dumps(dict(rec, resolved_precision=other)))   # as if begun on another machine
    with pytest.warns(UserWarning, match=f'began under {other} and resumes under'): train_run(hp, Store(tmp_path), progress=False, device='cpu')
    assert run.done

HOLDER = textwrap.dedent('''
    import sys, time
    from ticketlab.store import Store
    from ticketlab.train import TrainHparams
    with Store(sys.argv[1]).run('train', TrainHparams()).lock(): print('held', flush=True); time.sleep(60)
''')

def test_lock_of_a_killed_process_is_taken_over(tmp_path):
    "A process holding a run's lock is SIGKILLed: the lock file stays behind, stale, and the next process takes it over."
    import socket, threading, time
    from ticketlab.store import _stale
    r = Store(tmp_path).run('train', TrainHparams())
    holder = subprocess.Popen([sys.executable, '-c', HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # this checkout's ticketlab
    try:
        assert holder.stdout.readline().strip() == 'held'
        got = []
        def take():
            with r.lock(poll=0.01): got.append((r.path/'lock').read_text())
        t = threading.Thread(target=take); t.start(); time.sleep(0.5)
        assert got == [] and not _stale(r.path/'lock')          # a live holder is waited on
    finally: holder.kill(); holder.wait()
    t.join(10)
    assert got == [f'{socket.gethostname()} {os.getpid()}']     # taken over once the holder died
    assert not (r.path/'lock').exists()
