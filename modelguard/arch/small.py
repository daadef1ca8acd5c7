"""Small networks that train in seconds on a CPU."""
from __future__ import annotations

from torch import nn

from modelguard.arch.base import Classifier, knob_checks
from modelguard.utils.checks import check_number


def check_width(value, name: str = "arch.width") -> int:
    return check_number(value, name, low=1, integer=True, note="LeNet's channel multiplier: 6·width and 16·width "
                        "channels", fix=f"set {name}=1")


def check_hidden(value, name: str = "arch.hidden") -> int:
    return check_number(value, name, low=1, integer=True, note="the MLP's hidden units", fix=f"set {name}=64")


@knob_checks(width=check_width)
def lenet(num_classes: int, in_channels: int, image_size: int, mean, std, width: int = 1) -> Classifier:
    """LeNet-5-like CNN (two 5x5 conv blocks, two hidden dense layers; ``width`` scales channels)."""
    width = check_width(width)
    c1, c2 = 6 * width, 16 * width
    side = ((image_size // 2) - 4) // 2  # conv(pad 2) -> pool -> conv(valid) -> pool
    if side < 1:
        raise ValueError(f"arch=lenet needs images of at least 12 pixels, got image_size={image_size}; "
                         "use arch=mlp for smaller images")
    backbone = nn.Sequential(
        nn.Conv2d(in_channels, c1, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(c2 * side * side, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
    )
    return Classifier(backbone, 84, num_classes, tuple(mean), tuple(std))


@knob_checks(hidden=check_hidden)
def mlp(num_classes: int, in_channels: int, image_size: int, mean, std, hidden: int = 64) -> Classifier:
    """One hidden layer on flattened pixels: the smallest model, for tests and smoke runs."""
    hidden = check_hidden(hidden)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size * image_size, hidden), nn.ReLU())
    return Classifier(backbone, hidden, num_classes, tuple(mean), tuple(std))
