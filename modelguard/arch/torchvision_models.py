"""torchvision architectures behind the Classifier contract (random init unless ``pretrained``; see
modelguard.arch.pretrained: nothing downloads unless ``download=True``)."""
from __future__ import annotations

import torchvision
from torch import nn

from modelguard.arch.base import Classifier, knob_checks
from modelguard.arch.pretrained import check_download, load_pretrained
from modelguard.utils.checks import check_flag


def check_small_input_stem(value, name: str = "arch.small_input_stem") -> bool:
    return check_flag(value, name, fix=f"set {name}=true (a 3x3 stem for 28-32 px images) or false "
                                       "(ImageNet's 7x7 stem, for 224 px images)")


@knob_checks(small_input_stem=check_small_input_stem, download=check_download)
def resnet18(num_classes: int, in_channels: int, image_size: int, mean, std, small_input_stem: bool = True,
             pretrained: str | None = None, download: bool = False) -> Classifier:
    """torchvision ResNet-18; ``small_input_stem`` swaps the 7x7/2 stem and max-pool for a
    3x3/1 stem, the usual choice for 28-32 px images (ImageNet weights then skip that stem,
    whose shape differs)."""
    small_input_stem = check_small_input_stem(small_input_stem)
    model = resnet_classifier(torchvision.models.resnet18(weights=None), in_channels, num_classes, mean, std,
                              small_input_stem)
    load_pretrained(model, "resnet18", pretrained, download)
    return model


def resnet_classifier(net: torchvision.models.ResNet, in_channels: int, num_classes: int, mean, std,
                      small_input_stem: bool = False) -> Classifier:
    """A torchvision ResNet as a Classifier: its pooled features (``fc`` dropped), then Linear to K.
    The stem takes ``in_channels``; ``small_input_stem``: 3x3/1 and no max-pool instead of 7x7/2."""
    if small_input_stem:
        net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    feature_dim = net.fc.in_features
    net.fc = nn.Identity()
    return Classifier(net, feature_dim, num_classes, tuple(mean), tuple(std))


def vgg11_bn(num_classes: int, in_channels: int, image_size: int, mean, std) -> Classifier:
    """torchvision VGG-11 with batch norm, convolutional trunk only (a 512-d pooled feature)."""
    net = torchvision.models.vgg11_bn(weights=None)
    features = net.features
    if in_channels != 3:
        features[0] = nn.Conv2d(in_channels, 64, 3, padding=1)
    backbone = nn.Sequential(features, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return Classifier(backbone, 512, num_classes, tuple(mean), tuple(std))
