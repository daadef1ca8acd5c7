"""pretrained=imagenet and pretrained=<file>: torchvision-layout weights copied by name and shape,
read with weights_only, never downloaded unless asked, and a clear error naming the file to
place when it is missing. The tests write random weights in torchvision's key layout."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torchvision

from modelguard.arch import pretrained as pre
from modelguard.arch.paper import alexnet, resnet50, vgg16_bn
from modelguard.arch.torchvision_models import resnet18
from modelguard.dataset.families import CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD

IMAGENET = dict(mean=IMAGENET_MEAN, std=IMAGENET_STD)
CIFAR = dict(mean=CIFAR_MEAN, std=CIFAR_STD)


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    """An empty torch cache ($TORCH_HOME), and a download that fails the test if anything calls it."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_download(*args, **kwargs):
        raise AssertionError("nothing may download unless download=True")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    return tmp_path / "torch"


def place(torch_home: Path, arch: str, state: dict) -> Path:
    """Save ``state`` as torchvision's ImageNet file for ``arch`` in the torch cache."""
    path = torch_home / "hub" / "checkpoints" / pre.TORCHVISION_FILES[arch]
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def random_state(net: torch.nn.Module, keep=lambda k: True) -> dict:
    torch.manual_seed(1)
    return {k: torch.randn_like(v.float()).to(v.dtype) if v.is_floating_point() else v
            for k, v in net.state_dict().items() if keep(k)}


def test_resnet50_imagenet_weights_reach_the_backbone(torch_home):
    state = random_state(torchvision.models.resnet50(), keep=lambda k: not k.startswith(("layer3", "layer4")))
    place(torch_home, "resnet50", state)
    model = resnet50(num_classes=5, in_channels=3, image_size=224, pretrained="imagenet", **IMAGENET)
    own = model.state_dict()
    assert torch.equal(own["backbone.conv1.weight"], state["conv1.weight"])
    assert torch.equal(own["backbone.layer2.3.bn3.running_mean"], state["layer2.3.bn3.running_mean"])
    assert own["head.weight"].shape == (5, 2048)  # 1000-class fc: shape differs, stays random
    assert torch.equal(own["mean"].flatten(), torch.tensor(IMAGENET_MEAN))  # data buffers untouched


def test_a_1000_class_head_takes_the_imagenet_classifier(torch_home):
    state = random_state(torchvision.models.resnet18())
    place(torch_home, "resnet18", state)
    model = resnet18(num_classes=1000, in_channels=3, image_size=224, small_input_stem=False,
                     pretrained="imagenet", **IMAGENET)
    assert torch.equal(model.head.weight, state["fc.weight"]) and torch.equal(model.head.bias, state["fc.bias"])
    small = resnet18(num_classes=10, in_channels=3, image_size=32, pretrained="imagenet", **CIFAR)
    assert not torch.equal(small.backbone.conv1.weight[:, :, :3, :3], state["conv1.weight"][:, :, :3, :3])  # 3x3 stem
    assert torch.equal(small.backbone.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])


def test_cifar_vgg16_bn_takes_imagenet_convolutions_and_batch_norms(torch_home):
    from torchvision.models.vgg import cfgs, make_layers
    features = torch.nn.Sequential()
    features.add_module("features", make_layers(cfgs["D"], batch_norm=True))  # vgg16_bn's trunk: its "features.*" keys
    state = random_state(features)
    place(torch_home, "vgg16_bn", state)
    model = vgg16_bn(num_classes=10, in_channels=3, image_size=32, pretrained="imagenet", **CIFAR)
    own = model.state_dict()
    copied = [k for k in state if torch.equal(own["backbone." + k], state[k])]
    assert copied == list(state)  # all 13 convs and 13 batch norms, running statistics included
    assert model.head.weight.shape == (10, 512)


def test_alexnet_both_families(torch_home):
    # The convolutions and one 4096 x 4096 layer: enough to see both mappings, at a quarter of the file.
    state = random_state(torchvision.models.alexnet(), keep=lambda k: k.startswith(("features.", "classifier.4.")))
    place(torch_home, "alexnet", state)
    cifar = alexnet(num_classes=10, in_channels=3, image_size=32, pretrained="imagenet", **CIFAR)
    for i in (0, 3, 6, 8, 10):  # all five ImageNet convolutions, as the spec says
        assert torch.equal(cifar.backbone.features[i].weight, state[f"features.{i}.weight"])
    big = alexnet(num_classes=200, in_channels=3, image_size=224, pretrained="imagenet", **IMAGENET)
    assert torch.equal(big.backbone.classifier[4].weight, state["classifier.4.weight"])
    assert big.head.weight.shape == (200, 4096)


def test_missing_weights_name_the_file_to_place(torch_home):
    with pytest.raises(FileNotFoundError) as err:
        resnet50(num_classes=5, in_channels=3, image_size=224, pretrained="imagenet", **IMAGENET)
    message = str(err.value)
    target = torch_home / "hub" / "checkpoints" / "resnet50-0676ba61.pth"
    assert f"place the file resnet50-0676ba61.pth" in message and str(target) in message
    assert "https://download.pytorch.org/models/resnet50-0676ba61.pth" in message
    assert "arch.download=true" in message and "arch.pretrained=<path" in message
    assert not target.exists()


def test_download_only_when_asked(torch_home, monkeypatch):
    calls = []
    state = random_state(torchvision.models.alexnet(), keep=lambda k: k.startswith("features."))

    def fake_download(url, dst, hash_prefix=None):
        calls.append((url, hash_prefix))
        torch.save(state, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    model = alexnet(num_classes=10, in_channels=3, image_size=32, pretrained="imagenet", download=True, **CIFAR)
    assert calls == [("https://download.pytorch.org/models/alexnet-owt-7be5be79.pth", "7be5be79")]
    assert torch.equal(model.backbone.features[0].weight, state["features.0.weight"])


def test_a_given_file_or_folder_in_our_layout_or_a_checkpoint(tmp_path, torch_home):
    source = alexnet(num_classes=10, in_channels=3, image_size=32, **CIFAR)
    torch.save(source.state_dict(), tmp_path / "victim.pt")
    model = alexnet(num_classes=10, in_channels=3, image_size=32, pretrained=str(tmp_path / "victim.pt"), **CIFAR)
    assert torch.equal(model.head.weight, source.head.weight)  # our layout: the head too
    folder = tmp_path / "run"
    folder.mkdir()
    torch.save({"epoch": 3, "arch": "alexnet", "state_dict": source.state_dict(), "best_acc": 0.5},
               folder / "checkpoint.pth.tar")  # the original's checkpoint format
    again = alexnet(num_classes=10, in_channels=3, image_size=32, pretrained=str(folder), **CIFAR)
    assert torch.equal(again.backbone.features[0].weight, source.backbone.features[0].weight)


class _Trap:
    def __reduce__(self):
        return os.system, ("touch trap_marker",)


def test_weights_are_read_without_unpickling_objects(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"conv1.weight": torch.zeros(1), "trap": _Trap()}, tmp_path / "bad.pth")
    with pytest.raises(ValueError) as err:
        resnet50(num_classes=5, in_channels=3, image_size=32, pretrained=str(tmp_path / "bad.pth"), **CIFAR)
    assert not (tmp_path / "trap_marker").exists()
    message = str(err.value)
    assert f"{tmp_path / 'bad.pth'} is not a plain tensor file" in message and "refused" in message
    assert "place at" in message and "torch.save(model.state_dict(), path)" in message
    assert "weights_only" not in message  # torch's advice to unpickle is not passed on


class Custom:
    """A plain Python object: weights_only loading refuses it (no code would run, but it is not a tensor)."""

    def __init__(self):
        self.weights = [1.0, 2.0]


def test_imagenet_file_holding_an_object_names_the_file_to_place(torch_home):
    path = place(torch_home, "alexnet", {"features.0.weight": Custom()})
    with pytest.raises(ValueError) as err:
        alexnet(num_classes=10, in_channels=3, image_size=32, pretrained="imagenet", **CIFAR)
    message = str(err.value)
    assert message.startswith(f"arch=alexnet pretrained=imagenet: {path} is not a plain tensor file")
    assert "Custom" in message and "refused" in message  # what it holds
    assert f"place torchvision's {pre.TORCHVISION_FILES['alexnet']}" in message and str(path) in message
    assert "weights_only" not in message


def test_a_file_of_another_network_is_refused(tmp_path, torch_home):
    torch.save({"something.else": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="no entry of .*other.pt matches this network"):
        alexnet(num_classes=10, in_channels=3, image_size=32, pretrained=str(tmp_path / "other.pt"), **CIFAR)
    with pytest.raises(FileNotFoundError, match="pretrained=.*nope.pt: no such file"):
        alexnet(num_classes=10, in_channels=3, image_size=32, pretrained=str(tmp_path / "nope.pt"), **CIFAR)


def test_archs_without_imagenet_weights_say_so():
    with pytest.raises(ValueError, match="arch=lenet has no ImageNet weights"):
        pre.weights_file("lenet", "imagenet")
