"""Dataset families: input size, normalisation statistics and per-image transforms (spec attacks §1.2).

| family | train | test | size |
|---|---|---|---|
| imagenet | RandomResizedCrop(224), HorizontalFlip | Resize(256), CenterCrop(224) | 224 |
| cifar | Resize(32x32), RandomCrop(32, pad 4), HorizontalFlip | Resize(32x32) | 32 |
| tinyimagenet | as cifar | Resize(32) (short side) | 32 |

The transforms end in ``ToTensor``: images stay in pixel space [0, 1] and the model
normalises them with the family's mean/std, its first layer (modelguard.arch.base). The
statistics are listed here because the victim's family decides the model's normalisation.
The optional "blur" view (the original's unused ``train_transform_blur``) is the test
resize/crop followed by GaussianBlur(3, sigma in [0.1, 0.3]), no random crop or flip; it blurs
the float tensor, since on 8-bit pixels a blur this slight (neighbour weight <= 0.4%) rounds
away.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torchvision import transforms as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)

VIEWS = ("train", "test", "blur")


@dataclass(frozen=True)
class Family:
    name: str
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    model_family: str  # the architecture zoo knows only imagenet and cifar (spec attacks §2.1)

    def transform(self, view: str) -> Callable:
        """A fresh PIL -> float tensor [3, H, W] transform for ``view`` (train, test or blur)."""
        if view not in VIEWS:
            raise ValueError(f"unknown transform view {view!r}: use one of {', '.join(VIEWS)}")
        resize = self._resize_for_test()
        if view == "test":
            return T.Compose([*resize, T.ToTensor()])
        if view == "blur":
            return T.Compose([*resize, T.ToTensor(), T.GaussianBlur(3, sigma=(0.1, 0.3))])
        if self.name == "imagenet":
            return T.Compose([T.RandomResizedCrop(self.size), T.RandomHorizontalFlip(), T.ToTensor()])
        return T.Compose([T.Resize((self.size, self.size)), T.RandomCrop(self.size, padding=4),
                          T.RandomHorizontalFlip(), T.ToTensor()])

    def _resize_for_test(self) -> list:
        if self.name == "imagenet":
            return [T.Resize(256), T.CenterCrop(self.size)]
        if self.name == "tinyimagenet":
            return [T.Resize(self.size)]  # short side only, as the original (TinyImageNet is square)
        return [T.Resize((self.size, self.size))]


FAMILIES: dict[str, Family] = {
    "imagenet": Family("imagenet", 224, IMAGENET_MEAN, IMAGENET_STD, "imagenet"),
    "cifar": Family("cifar", 32, CIFAR_MEAN, CIFAR_STD, "cifar"),
    "tinyimagenet": Family("tinyimagenet", 32, IMAGENET_MEAN, IMAGENET_STD, "cifar"),
}


def family(name: str, knob: str = "family") -> Family:
    """The family called ``name``; a clear error naming ``knob`` otherwise."""
    if name not in FAMILIES:
        raise ValueError(f"{knob}={name!r} is invalid: allowed families are {', '.join(FAMILIES)} "
                         "(imagenet: 224 px; cifar and tinyimagenet: 32 px)")
    return FAMILIES[name]
