"The run store: reuse, exact resume after SIGKILL, corrupt checkpoints."
import os, signal, subprocess, sys, textwrap, warnings
import pytest, torch
from ticketlab.store import Store, train_run, load_checkpoint, CorruptCheckpointError
from ticketlab.train import TrainHparams

HP = TrainHparams(training_steps='4ep', precision='fp32')

KILLER = textwrap.dedent('''
    import os, signal, sys, torch
    torch.set_num_threads(1)
    from ticketlab.store import Store, train_run
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
