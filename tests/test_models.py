"Contracts of ticketlab.models: exact parameter counts, forward shapes, width, channels_last, seeding, prunable sets."
import pytest, torch
from torch import nn
from ticketlab.models import MODELS, model_names, get_model, prunable_parameters, is_conv_or_linear_weight

def n_params(m): return sum(p.numel() for p in m.parameters())

CIFAR = (3, 32, 32)
# Exact counts with 10 classes. LeNet on MNIST (1x28x28), the rest on CIFAR (3x32x32).
EXACT = {
    'lenet_300_100': 266_610,                      # Frankle & Carbin 2019
    'conv2': 4_300_992, 'conv4': 2_425_024,        # Ramanujan et al. 2020, Table 1
    'conv6': 2_261_184, 'conv8': 5_275_840,
    'resnet20': 272_474, 'resnet32': 466_906,      # open_lth cifar_resnet_N
    'resnet56': 855_770, 'resnet110': 1_730_714,
    'resnet18': 11_173_962,                        # Kuang Liu's pytorch-cifar
    'vgg11': 9_231_114, 'vgg13': 9_416_010,        # open_lth cifar_vgg_N
    'vgg16': 14_728_266, 'vgg19': 20_040_522,
    'wrn_16_8': 10_961_370,                        # Zagoruyko & Komodakis 2016
}

def test_registry_complete():
    assert sorted(model_names()) == sorted(EXACT) == sorted(MODELS)

@pytest.mark.parametrize('name', list(EXACT))
def test_exact_param_count(name):
    in_shape = (1, 28, 28) if name == 'lenet_300_100' else CIFAR
    assert n_params(get_model(name, in_shape=in_shape)) == EXACT[name]

def test_papers_rounded_sizes():
    approx = {'resnet20': 272e3, 'resnet56': 856e3, 'resnet18': 11.2e6, 'wrn_16_8': 11.0e6, 'vgg16': 14.7e6}
    for name, n in approx.items(): assert abs(EXACT[name] - n) / n < 0.005, name

@pytest.mark.parametrize('name', list(EXACT))
def test_forward_shape(name):
    bs = 1 if name in ('resnet18', 'wrn_16_8', 'vgg16', 'vgg19', 'resnet110') else 2
    m = get_model(name, num_classes=7)
    y = m(torch.randn(bs, *CIFAR))
    assert y.shape == (bs, 7) and torch.isfinite(y).all()

@pytest.mark.parametrize('name,in_shape', [('lenet_300_100', (1, 28, 28)), ('conv4', (1, 28, 28)), ('resnet20', (1, 28, 28)),
                                           ('vgg11', (3, 64, 64)), ('conv2', (3, 16, 16))])
def test_other_input_shapes(name, in_shape):
    assert get_model(name, in_shape=in_shape)(torch.randn(2, *in_shape)).shape == (2, 10)

def test_conv_widths_and_bias_free():
    m = get_model('conv6', width=0.5)
    convs = [x for x in m.modules() if isinstance(x, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 32, 64, 64, 128, 128]
    assert all(x.bias is None for x in m.modules() if isinstance(x, (nn.Conv2d, nn.Linear)))
    assert not any(isinstance(x, nn.BatchNorm2d) for x in m.modules())
    lins = [x for x in m.modules() if isinstance(x, nn.Linear)]
    assert [l.out_features for l in lins] == [128, 128, 10]

@pytest.mark.parametrize('name', ['lenet_300_100', 'conv2', 'resnet20', 'vgg11', 'resnet18', 'wrn_16_8'])
def test_width_changes_count(name):
    small, base = n_params(get_model(name, width=0.5)), n_params(get_model(name))
    assert small < base
    assert get_model(name, width=0.5)(torch.randn(1, *CIFAR)).shape == (1, 10)

def test_resnet_width_matches_open_lth():
    # cifar_resnet_20_32: 32-64-128 channels
    m = get_model('resnet20', width=2)
    assert m.conv.out_channels == 32 and m.fc.in_features == 128

def test_resnet_shortcuts():
    m = get_model('resnet20')
    shortcuts = [b.shortcut for b in m.blocks if len(b.shortcut)]
    assert len(shortcuts) == 2  # only where the shape changes
    for s in shortcuts:
        assert isinstance(s[0], nn.Conv2d) and s[0].kernel_size == (1, 1) and s[0].stride == (2, 2)
        assert isinstance(s[1], nn.BatchNorm2d)

@pytest.mark.parametrize('name', ['lenet_300_100', 'conv4', 'resnet20', 'vgg11', 'wrn_16_8'])
def test_channels_last(name):
    torch.manual_seed(0)
    m = get_model(name, width=0.25).eval()
    x = torch.randn(2, *CIFAR)
    y = m(x)
    m = m.to(memory_format=torch.channels_last)
    torch.testing.assert_close(m(x.to(memory_format=torch.channels_last)), y, rtol=1e-4, atol=1e-4)

def test_init_follows_global_seed_only():
    torch.manual_seed(1); a = get_model('resnet20')
    torch.manual_seed(1); b = get_model('resnet20')
    c = get_model('resnet20')  # the generator moved on: get_model does not reseed
    torch.manual_seed(2); d = get_model('resnet20')
    sd = lambda m: m.state_dict()
    assert all(torch.equal(sd(a)[k], sd(b)[k]) for k in sd(a))
    assert not torch.equal(sd(a)['conv.weight'], sd(c)['conv.weight'])
    assert not torch.equal(sd(a)['conv.weight'], sd(d)['conv.weight'])

def test_open_lth_init():
    torch.manual_seed(0)
    m = get_model('resnet56')
    bn = [x for x in m.modules() if isinstance(x, nn.BatchNorm2d)]
    w = torch.cat([b.weight.detach() for b in bn])
    assert (w >= 0).all() and (w < 1).all() and 0.4 < w.mean() < 0.6  # U[0, 1) scales
    assert all((b.bias == 0).all() for b in bn)
    conv = m.blocks[4].conv1.weight  # Kaiming normal, fan_in: std = sqrt(2 / fan_in)
    assert abs(conv.std().item() / (2 / conv[0].numel()) ** 0.5 - 1) < 0.05

def test_unknown_model():
    with pytest.raises(ValueError, match='choose one of lenet_300_100, conv2'): get_model('resnet21')
    with pytest.raises(ValueError, match='width must be positive'): get_model('conv2', width=-1)

def test_prunable_default():
    m = get_model('vgg11')
    ps = prunable_parameters(m)
    assert list(ps) == [n for n, _ in m.named_parameters() if n.endswith('conv.weight') or n == 'fc.weight']
    assert all(isinstance(p, nn.Parameter) for p in ps.values())
    assert len(prunable_parameters(get_model('resnet20'))) == 22
    assert list(prunable_parameters(get_model('conv2'))) == ['conv1.weight', 'conv2.weight', 'fc1.weight', 'fc2.weight', 'fc3.weight']
    # BatchNorm and biases are never prunable by default
    wrn = get_model('wrn_16_8', width=0.25)
    assert all(p.dim() in (2, 4) for p in prunable_parameters(wrn).values())

def test_prunable_predicate_and_attribute():
    m = get_model('resnet20')
    no_fc = prunable_parameters(m, lambda n, p, mod: is_conv_or_linear_weight(n, p, mod) and n != 'fc.weight')
    assert 'fc.weight' not in no_fc and len(no_fc) == 21
    everything = prunable_parameters(m, lambda n, p, mod: True)
    assert list(everything) == [n for n, _ in m.named_parameters()]
    m.prunable_names = {'conv.weight', 'fc.weight', 'bn.weight'}  # narrows the default rule: bn.weight stays out
    assert list(prunable_parameters(m)) == ['conv.weight', 'fc.weight']

def test_prunable_shared_parameter():
    lin = nn.Linear(3, 3)
    m = nn.Sequential(lin, nn.ReLU(), lin)
    assert list(prunable_parameters(m)) == ['0.weight']  # as named_parameters, deduplicated
