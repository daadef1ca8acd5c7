"""The paper's architectures (spec attacks §2.1): each builds at its input size, forwards a tiny
batch to K logits, and has the structure (and, for the CIFAR VGG, the initialisation) the spec gives."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from modelguard.arch.paper import alexnet, resnet50, trunk_side, vgg16_bn
from modelguard.arch.torchvision_models import resnet18
from modelguard.dataset.families import CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD

GREY = ((0.5,), (0.25,))


def build(factory, k, channels, size, **kw):
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if size >= 64 else (CIFAR_MEAN, CIFAR_STD)
    if channels == 1:
        mean, std = GREY
    return factory(num_classes=k, in_channels=channels, image_size=size, mean=mean, std=std, **kw)


@pytest.mark.parametrize("factory, k, channels, size, kw, feature_dim", [
    (resnet50, 7, 3, 224, {}, 2048),
    (resnet50, 3, 1, 32, {}, 2048),
    (alexnet, 5, 3, 224, {}, 4096),           # auto: imagenet family
    (alexnet, 10, 3, 32, {}, 256),            # auto: cifar family
    (vgg16_bn, 100, 3, 32, {}, 512),          # auto: cifar family (the CIFAR victims)
    # Not in the grid, and its 138M parameters take seconds to initialise: slow.
    pytest.param(vgg16_bn, 4, 3, 64, {"family": "imagenet"}, 4096, marks=pytest.mark.slow),
    (resnet18, 10, 3, 32, {}, 512),
], ids=["resnet50-224", "resnet50-grey32", "alexnet-224", "alexnet-32", "vgg16_bn-32", "vgg16_bn-imagenet64",
        "resnet18-32"])
def test_builds_and_forwards_at_its_input_size(factory, k, channels, size, kw, feature_dim):
    torch.manual_seed(0)
    model = build(factory, k, channels, size, **kw).eval()
    x = torch.rand(2, channels, size, size)
    with torch.no_grad():
        out = model(x)
        features = model.features(x)
    assert out.shape == (2, k) and torch.isfinite(out).all()
    assert model.num_classes == k and model.head.out_features == k
    assert features.shape == (2, feature_dim) == (2, model.feature_dim)


def test_cifar_alexnet_is_the_original_trunk():
    model = build(alexnet, 10, 3, 32)
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert [n for n, _ in convs] == [f"backbone.features.{i}" for i in (0, 3, 6, 8, 10)]  # torchvision's indices
    assert [(m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0], m.padding[0]) for _, m in convs] == [
        (3, 64, 11, 4, 5), (64, 192, 5, 1, 2), (192, 384, 3, 1, 1), (384, 256, 3, 1, 1), (256, 256, 3, 1, 1)]
    pools = [m for m in model.modules() if isinstance(m, nn.MaxPool2d)]
    assert [p.kernel_size for p in pools] == [2, 2, 2]
    assert trunk_side(model.backbone.features, 32) == 1


def test_cifar_vgg16_bn_structure_and_initialisation():
    torch.manual_seed(0)
    model = build(vgg16_bn, 10, 3, 32)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(convs) == len(bns) == 13 and len([m for m in model.modules() if isinstance(m, nn.MaxPool2d)]) == 5
    assert linears == [model.head] and model.head.in_features == 512  # one linear layer: 512 -> K
    wide = convs[-1]  # 512 x 512 x 3 x 3: enough weights for a tight std estimate
    assert wide.weight.std().item() == pytest.approx(math.sqrt(2 / (9 * 512)), rel=0.02)
    assert all(c.bias.abs().max() == 0 for c in convs)
    assert all(torch.equal(b.weight, torch.ones_like(b.weight)) and b.bias.abs().max() == 0 for b in bns)
    assert model.head.weight.std().item() == pytest.approx(0.01, rel=0.1) and model.head.bias.abs().max() == 0


@pytest.mark.parametrize("factory, size, family, sizes", [
    (vgg16_bn, 28, "auto", "32-63"), (vgg16_bn, 64, "cifar", "32-63"),
    (alexnet, 28, "auto", "29-60"), (alexnet, 32, "imagenet", "at least 63")])
def test_sizes_that_do_not_fit_are_refused(factory, size, family, sizes):
    with pytest.raises(ValueError, match=f"takes {sizes} px images, got image_size={size}"):
        build(factory, 10, 3, size, family=family)


def test_unknown_family_is_named():
    with pytest.raises(ValueError, match="arch.family='mnist'"):
        build(alexnet, 10, 3, 32, family="mnist")
