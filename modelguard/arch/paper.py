"""The paper's architectures (spec attacks §2), behind the Classifier contract.

- ``resnet50``: torchvision's ResNet-50 (the imagenet family's victim and substitute).
- ``alexnet`` and ``vgg16_bn`` come in two families, as the original's zoo:
  - imagenet: torchvision's networks, the head being the last 4096 -> K linear layer;
  - cifar (32 px): AlexNet's five convolutions with 2x2 max-pools down to a 256-d feature,
    and VGG-16's configuration D with batch norm down to a 512-d feature, each with one
    linear layer to K. Their layer indices equal torchvision's (``features.<i>``), so
    ImageNet weights reach their convolutions (and VGG's batch norms) by name and shape.

``family="auto"`` follows the image size, which the dataset's family fixes: cifar below 64
px (the paper's 32 px families), imagenet from 64 px (224 px). A cifar variant only fits
images that its trunk brings down to 1x1 (AlexNet 29-60 px, VGG 32-63 px), and the imagenet AlexNet needs 63 px;
other sizes stop at build time with the range that fits.

``pretrained``: None, "imagenet" (torchvision's weights from the torch cache) or a file;
see modelguard.arch.pretrained.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import torchvision
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from modelguard.arch.base import Classifier, knob_checks
from modelguard.arch.pretrained import check_download, load_pretrained
from modelguard.arch.torchvision_models import resnet_classifier
from modelguard.utils.checks import check_choice

FAMILIES = ("auto", "imagenet", "cifar")


def check_family(value, name: str = "arch.family") -> str:
    return check_choice(value, name, FAMILIES, fix=f"set {name}=auto (cifar below 64 px, imagenet from 64 px)")


def resolve_family(arch: str, family: str, image_size: int) -> str:
    family = check_family(family)
    if family == "auto":
        return "cifar" if image_size < 64 else "imagenet"
    return family


def trunk_side(layers: nn.Sequential, size: int) -> int:
    """Side of the feature map ``layers`` (convolutions, max-pools) make of a size x size image."""
    for layer in layers:
        if isinstance(layer, (nn.Conv2d, nn.MaxPool2d)):
            k, s, p, d = (_pair(getattr(layer, a)) for a in ("kernel_size", "stride", "padding", "dilation"))
            size = math.floor((size + 2 * p - d * (k - 1) - 1) / s) + 1
    return size


def _pair(value) -> int:
    return value[0] if isinstance(value, tuple) else value


def _require_side(arch: str, family: str, layers: nn.Sequential, image_size: int, want_one: bool, sizes: str) -> None:
    side = trunk_side(layers, image_size)
    if side < 1 or (want_one and side != 1):
        raise ValueError(f"arch={arch} ({family} family) takes {sizes} px images, got image_size={image_size}; "
                         "arch.family=cifar fits 32 px data, arch.family=imagenet 224 px data; "
                         "for other sizes use arch=resnet18, resnet50 or lenet")


def _first_conv(layers: nn.Sequential, in_channels: int) -> None:
    """Swap the first convolution for ``in_channels`` inputs (grey images); its weights stay random."""
    conv = layers[0]
    if conv.in_channels != in_channels:
        layers[0] = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                              bias=conv.bias is not None)


def _trunk(features: nn.Sequential) -> nn.Sequential:
    """A CIFAR backbone: ``features`` then flatten, keeping torchvision's ``features.<i>`` names."""
    return nn.Sequential(OrderedDict(features=features, flatten=nn.Flatten()))


@knob_checks(download=check_download)
def resnet50(num_classes: int, in_channels: int, image_size: int, mean, std,
             pretrained: str | None = None, download: bool = False) -> Classifier:
    """torchvision ResNet-50 (imagenet family): 2048-d pooled features, then Linear(2048, K)."""
    model = resnet_classifier(torchvision.models.resnet50(weights=None), in_channels, num_classes, mean, std)
    load_pretrained(model, "resnet50", pretrained, download)
    return model


def cifar_alexnet_features(in_channels: int = 3) -> nn.Sequential:
    """The original's CIFAR AlexNet trunk: 32 px -> 256 x 1 x 1 (torchvision's conv indices 0, 3, 6, 8, 10)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 64, 11, stride=4, padding=5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
    )


@knob_checks(family=check_family, download=check_download)
def alexnet(num_classes: int, in_channels: int, image_size: int, mean, std, family: str = "auto",
            pretrained: str | None = None, download: bool = False) -> Classifier:
    """AlexNet: imagenet family (torchvision's, 4096-d features) or cifar family (256-d); the D-DAE shadows' arch."""
    family = resolve_family("alexnet", family, image_size)
    if family == "cifar":
        features = cifar_alexnet_features(in_channels)
        _require_side("alexnet", family, features, image_size, want_one=True, sizes="29-60")
        model = Classifier(_trunk(features), 256, num_classes, tuple(mean), tuple(std))
    else:
        model = _imagenet_classifier("alexnet", torchvision.models.alexnet(weights=None), in_channels, image_size,
                                     "at least 63", num_classes, mean, std)
    load_pretrained(model, "alexnet", pretrained, download)
    return model


@knob_checks(family=check_family, download=check_download)
def vgg16_bn(num_classes: int, in_channels: int, image_size: int, mean, std, family: str = "auto",
             pretrained: str | None = None, download: bool = False) -> Classifier:
    """VGG-16 with batch norm: cifar family (the CIFAR victims' arch: 512-d features, the
    original's initialisation) or imagenet family (torchvision's, 4096-d features)."""
    family = resolve_family("vgg16_bn", family, image_size)
    if family == "cifar":
        # torchvision's own builder of vgg16_bn's ``features`` (configuration D with batch norm),
        # without its 25088 -> 4096 classifier, which the CIFAR variant drops anyway.
        features = make_layers(cfgs["D"], batch_norm=True)
        _first_conv(features, in_channels)
        _require_side("vgg16_bn", family, features, image_size, want_one=True, sizes="32-63")
        model = Classifier(_trunk(features), 512, num_classes, tuple(mean), tuple(std))
        init_cifar_vgg(model)
    else:
        model = _imagenet_classifier("vgg16_bn", torchvision.models.vgg16_bn(weights=None), in_channels, image_size,
                                     "at least 32", num_classes, mean, std)
    load_pretrained(model, "vgg16_bn", pretrained, download)
    return model


def _imagenet_classifier(arch: str, net: nn.Module, in_channels: int, image_size: int, sizes: str,
                         num_classes: int, mean, std) -> Classifier:
    """torchvision's imagenet-family AlexNet or VGG as a Classifier: its 4096-d features (the last
    linear layer dropped), then Linear to K; ``sizes``: the image sizes its trunk takes."""
    _first_conv(net.features, in_channels)
    _require_side(arch, "imagenet", net.features, image_size, want_one=False, sizes=sizes)
    net.classifier[6] = nn.Identity()
    return Classifier(net, 4096, num_classes, tuple(mean), tuple(std))


def init_cifar_vgg(model: nn.Module) -> None:
    """The original CIFAR VGG's initialisation: convolutions N(0, sqrt(2 / (k*k*out))) with zero
    bias, batch norm 1 and 0, linear layers N(0, 0.01) with zero bias."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)
