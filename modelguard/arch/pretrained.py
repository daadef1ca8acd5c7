"""Pretrained weights: torchvision's ImageNet files from the local torch cache, or a file you name
(spec attacks §2.1, ``pretrained``).

Like the original, the network is built randomly initialised and then every parameter or
buffer whose **name and shape** match the file is copied; the rest keeps its initial
value (a K-class head, a 1-channel first convolution, the CIFAR variants' classifiers).
Names are matched in this project's layout (``backbone.*``, ``head.*``: a saved
``victim.pt``) or in torchvision's, where ``<key>`` is ``backbone.<key>`` except the
ImageNet head (``fc.``, ``classifier.6.``), which is ``head.``. The normalisation buffers
(``mean``, ``std``) belong to the data and are never copied.

Files are read with ``torch.load(weights_only=True)``: tensors and plain containers only,
never arbitrary pickled objects. Nothing is downloaded unless ``download=True``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Mapping

import torch
from torch import nn

from modelguard.utils.checks import check_flag
from modelguard.utils.io import UnreadableArtifact, load_tensors

URL_BASE = "https://download.pytorch.org/models/"
# torchvision's IMAGENET1K_V1 files (the weights the original's zoo loaded), by arch name.
TORCHVISION_FILES = {
    "resnet18": "resnet18-f37072fd.pth",
    "resnet50": "resnet50-0676ba61.pth",
    "alexnet": "alexnet-owt-7be5be79.pth",
    "vgg16_bn": "vgg16_bn-6c64b313.pth",
}
# The ImageNet classifier in torchvision's layout: our ``head``.
TORCHVISION_HEADS = {"resnet18": "fc.", "resnet50": "fc.", "alexnet": "classifier.6.", "vgg16_bn": "classifier.6."}
DATA_BUFFERS = ("mean", "std")


def hub_checkpoints() -> Path:
    """torch's cache folder for downloaded weights: $TORCH_HOME/hub/checkpoints (torch.hub.get_dir)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def weights_file(arch: str, pretrained: str, download: bool = False) -> Path:
    """The file ``pretrained`` names: torchvision's ImageNet file for ``arch`` in the torch cache
    ("imagenet"), or a path (a directory: its first *.pth.tar, *.pth or *.pt, sorted)."""
    if pretrained == "imagenet":
        if arch not in TORCHVISION_FILES:
            raise ValueError(f"arch={arch} has no ImageNet weights in torchvision; use arch.pretrained=null "
                             f"or a file (archs with ImageNet weights: {', '.join(TORCHVISION_FILES)})")
        name = TORCHVISION_FILES[arch]
        path = hub_checkpoints() / name
        if not path.is_file():
            if not download:
                raise FileNotFoundError(
                    f"arch={arch} pretrained=imagenet: torchvision's ImageNet weights are not in the torch cache.\n"
                    f"  place the file {name} (from {URL_BASE}{name}) at {path}\n"
                    f"  (the folder is $TORCH_HOME/hub/checkpoints), or set arch.pretrained=<path to the file>, "
                    "or arch.download=true to fetch it")
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(URL_BASE + name, str(path), hash_prefix=name.rsplit("-", 1)[1].split(".")[0])
        return path
    path = Path(pretrained).expanduser()
    if path.is_dir():
        found = sorted(path.glob("*.pth.tar")) or sorted(path.glob("*.pth")) or sorted(path.glob("*.pt"))
        if not found:
            raise FileNotFoundError(f"arch={arch} pretrained={pretrained}: the folder holds no *.pth.tar, *.pth "
                                    "or *.pt file")
        return found[0]
    if not path.is_file():
        raise FileNotFoundError(f"arch={arch} pretrained={pretrained}: no such file; use arch.pretrained=imagenet "
                                "(torchvision's weights from the torch cache), a weights file, or null")
    return path


def read_state_dict(path: Path, arch: str = "", pretrained: str | None = None) -> dict[str, torch.Tensor]:
    """A state dict from ``path`` (weights_only); a checkpoint dict's ``state_dict`` entry is unwrapped.

    A file that is not a plain tensor file (pickled Python objects, which are refused unrun) or
    cannot be read is a ValueError naming it and the file to place there instead."""
    try:
        obj = load_tensors(path)
    except UnreadableArtifact as err:
        # load_tensors words the refusal itself: torch's own text advises weights_only=False, which must not be done
        raise ValueError(f"{_knob(arch, pretrained)}{err}; {_what_to_place(arch, pretrained, path)}") from None
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]  # the original's checkpoint.pth.tar format (spec attacks §0.4)
    if not isinstance(obj, Mapping) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{_knob(arch, pretrained)}{path} holds no state dict (a mapping of names to tensors); "
                         f"{_what_to_place(arch, pretrained, path)}")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _knob(arch: str, pretrained: str | None) -> str:
    return f"arch={arch} pretrained={pretrained}: " if arch else ""


def _what_to_place(arch: str, pretrained: str | None, path: Path) -> str:
    if pretrained == "imagenet" and arch in TORCHVISION_FILES:
        name = TORCHVISION_FILES[arch]
        return f"place torchvision's {name} (from {URL_BASE}{name}) at {path} instead"
    return (f"place at {path} a state dict saved with torch.save(model.state_dict(), path) (tensors only), "
            "or set arch.pretrained to such a file, imagenet or null")


def target_names(key: str, head_prefix: str) -> Iterator[str]:
    """Where a file's ``key`` may go in a Classifier: as is (our layout), else torchvision's layout."""
    key = key.removeprefix("module.")  # saved from DataParallel
    if key.startswith(("backbone.", "head.")):
        yield key
    elif head_prefix and key.startswith(head_prefix):
        yield "head." + key[len(head_prefix):]
    else:
        yield "backbone." + key


@torch.no_grad()
def copy_matching(model: nn.Module, state: Mapping[str, torch.Tensor], head_prefix: str = "") -> list[str]:
    """Copy every entry of ``state`` whose name and shape match ``model``; the names copied."""
    own = model.state_dict()
    copied = []
    for key, value in state.items():
        for name in target_names(key, head_prefix):
            if name in own and name not in DATA_BUFFERS and own[name].shape == value.shape:
                own[name].copy_(value)
                copied.append(name)
                break
    return copied


def check_download(value, name: str = "arch.download") -> bool:
    return check_flag(value, name, fix=f"set {name}=false (read the torch cache only) or true (fetch missing "
                                       "ImageNet weights)")


def load_pretrained(model: nn.Module, arch: str, pretrained: str | None, download: bool = False) -> list[str]:
    """Initialise ``model`` from ``pretrained`` (None: leave it; "imagenet"; a path). The names copied."""
    download = check_download(download)
    if pretrained is None:
        return []
    path = weights_file(arch, pretrained, download)
    copied = copy_matching(model, read_state_dict(path, arch, pretrained), TORCHVISION_HEADS.get(arch, ""))
    if not copied:
        raise ValueError(f"arch={arch} pretrained={pretrained}: no entry of {path} matches this network by name "
                         "and shape; is it a state dict of this architecture?")
    return copied
