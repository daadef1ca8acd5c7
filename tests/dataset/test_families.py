"""The family transforms of spec attacks §1.2, in pixel space (no Normalize: the model normalises)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from modelguard.dataset.families import CIFAR_MEAN, FAMILIES, IMAGENET_MEAN, family


def image(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_statistics_and_sizes():
    assert (FAMILIES["imagenet"].size, FAMILIES["cifar"].size, FAMILIES["tinyimagenet"].size) == (224, 32, 32)
    assert FAMILIES["cifar"].mean == CIFAR_MEAN
    assert FAMILIES["tinyimagenet"].mean == IMAGENET_MEAN  # ImageNet statistics, as the original
    assert FAMILIES["tinyimagenet"].model_family == "cifar"


def test_imagenet_test_view_is_resize_256_center_crop_224():
    im = image(400, 300)
    got = FAMILIES["imagenet"].transform("test")(im)
    resized = im.resize((341, 256), Image.BILINEAR)  # short side 256, aspect kept
    left, top = (341 - 224) // 2, (256 - 224) // 2
    want = torch.from_numpy(np.array(resized.crop((left, top, left + 224, top + 224)))).permute(2, 0, 1) / 255
    assert got.shape == (3, 224, 224)
    assert (got - want).abs().max() < 0.05  # PIL vs torchvision antialiasing differ by rounding only


def test_cifar_test_view_squashes_to_32x32_and_tinyimagenet_keeps_aspect():
    assert FAMILIES["cifar"].transform("test")(image(50, 40)).shape == (3, 32, 32)
    assert FAMILIES["tinyimagenet"].transform("test")(image(64, 64)).shape == (3, 32, 32)
    assert FAMILIES["tinyimagenet"].transform("test")(image(64, 48)).shape == (3, 32, 42)  # Resize(32): short side


def test_train_views_are_random_crops_and_flips():
    white = Image.new("RGB", (32, 32), (255, 255, 255))
    torch.manual_seed(0)
    outs = [FAMILIES["cifar"].transform("train")(white) for _ in range(20)]
    assert all(o.shape == (3, 32, 32) for o in outs)
    assert any(o.min() == 0 for o in outs)  # some crop reaches into the zero padding
    im = image(300, 260)
    a, b = (FAMILIES["imagenet"].transform("train")(im) for _ in range(2))
    assert a.shape == b.shape == (3, 224, 224) and not torch.equal(a, b)


def test_blur_view_is_the_test_view_slightly_blurred():
    im = image(32, 32)
    test, blur = FAMILIES["cifar"].transform("test")(im), FAMILIES["cifar"].transform("blur")(im)
    assert blur.shape == test.shape and 0 < (blur - test).abs().mean() < 0.02  # sigma <= 0.3: a slight blur


def test_unknown_family_and_view_are_named():
    with pytest.raises(ValueError, match="family='mnist'.*imagenet, cifar, tinyimagenet"):
        family("mnist")
    with pytest.raises(ValueError, match="'rotate'"):
        FAMILIES["cifar"].transform("rotate")
