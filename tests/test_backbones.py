"""Tests of the alternative E3Outlier backbones (image_od.networks.backbones)."""
import pytest
import torch
from torch import nn

from image_od.networks.backbones import DenseNet, ResNet, ResNet18, WideResNet, make_backbone

NAMES = ["wrn-10-2", "resnet18-4", "resnet20", "resnet50", "densenet22", "densenet40"]


pytestmark = pytest.mark.usefixtures("one_thread")


FEATURES = {"wrn-10-2": 128, "resnet18-4": 32, "resnet20": 64, "resnet50": 64, "densenet22": 69, "densenet40": 132}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("channels", [1, 3])
def test_output_shapes(name, channels):
    torch.manual_seed(0)
    net = make_backbone(name, channels, 7).eval()
    with torch.no_grad():
        logits, features = net(torch.randn(4, channels, 32, 32))
    assert logits.shape == (4, 7)
    assert features.ndim == 2 and features.shape == (4, FEATURES[name])
    assert torch.isfinite(logits).all() and torch.isfinite(features).all()


@pytest.mark.parametrize("name", NAMES)
def test_sgd_reduces_loss(name):
    torch.manual_seed(0)
    x, y = torch.randn(16, 3, 32, 32), torch.arange(16) % 4
    net = make_backbone(name, 3, 4).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(6):
        loss = nn.functional.cross_entropy(net(x)[0], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.95 * losses[0], losses


@pytest.mark.parametrize("name", NAMES)
def test_dropout_modules(name):
    def n_dropout(net):
        return sum(isinstance(m, nn.Dropout) for m in net.modules())

    assert n_dropout(make_backbone(name, 1, 4, dropout=0.0)) == 0
    assert n_dropout(make_backbone(name, 1, 4, dropout=0.3)) > 0


def test_architectures():
    assert isinstance(make_backbone("wrn", 3, 4), WideResNet)
    assert isinstance(make_backbone("resnet32", 3, 4), ResNet)
    # resnet50 is the official 6*8+2 basic-block net: 8 blocks per stage, 64 features
    r50 = make_backbone("resnet50", 1, 4, dropout=0.1)
    assert sum(isinstance(m, nn.Dropout) for m in r50.modules()) == 24
    # bottleneck ResNet when only 9n+2 fits: 256 features
    r29 = make_backbone("resnet29", 1, 4).eval()
    assert r29(torch.zeros(2, 1, 32, 32))[1].shape == (2, 256)
    assert ResNet(1, 4, depth=11, block="bottleneck").fc.in_features == 256
    # DenseNet-BC: one dropout per bottleneck layer, (depth-4)//6 layers per block, 3 blocks
    assert sum(isinstance(m, nn.Dropout) for m in DenseNet(1, 4, depth=40, dropout=0.2).modules()) == 18


def test_resnet18_is_the_cifar_variant():
    net = make_backbone("resnet18", 3, 10)
    assert isinstance(net, ResNet18)
    assert sum(p.numel() for p in net.parameters()) == 11_173_962  # the usual CIFAR ResNet18 count
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in net.modules())
    stem = net.features[0]
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1)
    assert isinstance(make_backbone("resnet20", 1, 4), ResNet)  # the 3-stage family, not ResNet18


@pytest.mark.parametrize("name", ["vgg16", "resnet", "resnet49", "resnet4", "densenet23", "densenet4", "wrn-12-4",
                                  "wrn-10", "wrn-10-0", ""])
def test_bad_names(name):
    with pytest.raises(ValueError, match="accepted forms"):
        make_backbone(name, 1, 4)


def test_bad_constructor_args():
    with pytest.raises(ValueError):
        ResNet(1, 4, depth=21)
    with pytest.raises(ValueError):
        ResNet(1, 4, depth=22, block="bottleneck")  # 22 is 6n+2 but not 9n+2
    with pytest.raises(ValueError):
        ResNet(1, 4, depth=20, block="wide")
    with pytest.raises(ValueError):
        DenseNet(1, 4, depth=23)
