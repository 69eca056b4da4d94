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
