"The ticketlab command as a user runs it: in a subprocess."
import os, subprocess, sys
import pytest

def ticketlab(*args, env=None):
    return subprocess.run([sys.executable, '-m', 'ticketlab.cli', *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)

def test_quick_start_defaults(tmp_path):
    p = ticketlab('train', '--store', str(tmp_path), '--no-progress')
    assert p.returncode == 0, p.stderr
    test_acc = float(next(l for l in p.stdout.splitlines() if l.startswith('test')).split()[1])
    assert test_acc >= 0.95
    assert f'stored in {tmp_path}' in p.stdout

@pytest.mark.parametrize('args,expect', [
    (['train', '--model', 'resnet21'], 'resnet20'),
    (['train', '--dataset', 'imagenet'], 'cifar10'),
    (['train', '--training-steps', '2000'], "'<N>it'"),
    (['train', '--momentum', '1.0'], 'outside'),
    (['train', '--dataset', 'imagefolder', '--data-root', '/no/such/folder'], '/no/such/folder'),
    (['frobnicate'], 'choose one of'),
])
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, args, expect):
    p = ticketlab(*args, '--store', str(tmp_path/'store'))
    assert p.returncode == 2
    assert p.stderr.count('\n') == 1 and expect in p.stderr, p.stderr
    assert not (tmp_path/'store').exists()

def test_help_lists_models_and_data_sets():
    p = ticketlab('train', '--help')
    assert p.returncode == 0
    for name in ('lenet_300_100', 'resnet20', 'wrn_16_8', 'digits', 'cifar10', 'imagefolder'): assert name in p.stdout
    top = ticketlab('--help')
    assert top.returncode == 0 and 'train' in top.stdout
