"""A classifier = input normalisation -> feature backbone -> linear head.

Every `arch` option builds one. Keeping normalisation inside the model lets every dataset
hand out pixel-space images in [0, 1] (attacks clip there) and makes the penultimate
features (``features``) and the logit layer (``head``) available to S4L's rotation head and
to MAD's proxy, whatever the architecture.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
from torch import nn

# A knob check: (value, the knob as the user spells it, e.g. "arch.width") -> the value, or a
# ValueError in the project's format (utils.checks).
KnobCheck = Callable[[Any, str], Any]


def knob_checks(**checks: KnobCheck) -> Callable[[Callable], Callable]:
    """Attach an arch factory's knob checks to it (``factory.knob_checks``), so that
    stages/validate.py runs them on the config before any stage, without building a network
    (a factory needs the data's shapes); the factory runs the same checks when called."""
    def attach(factory: Callable) -> Callable:
        factory.knob_checks = dict(checks)
        return factory
    return attach


def check_knobs(factory: Callable, knobs: Mapping[str, Any], prefix: str) -> None:
    """Run ``factory.knob_checks`` on the ``knobs`` given (named ``{prefix}.{knob}``)."""
    for knob, check in getattr(factory, "knob_checks", {}).items():
        if knob in knobs:
            check(knobs[knob], f"{prefix}.{knob}")


class Classifier(nn.Module):
    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int,
                 mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.backbone = backbone
        self.head = nn.Linear(feature_dim, num_classes)
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.autocast_dtype: torch.dtype | None = None
        self.channels_last = False

    def speed_up(self, autocast_dtype: torch.dtype | None = None, channels_last: bool = False) -> "Classifier":
        """GPU speed settings: forward passes under autocast to ``autocast_dtype`` (bfloat16), with
        float32 logits out (the softmax, the losses and every defense stay in float32 or wider);
        weights and inputs in channels-last layout. Attributes, not buffers: checkpoints do not change."""
        self.autocast_dtype = autocast_dtype
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.to(memory_format=torch.channels_last)
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone((x - self.mean) / self.std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.autocast_dtype is None:
            return self.head(self.features(x))
        with torch.autocast(x.device.type, dtype=self.autocast_dtype):
            logits = self.head(self.features(x))
        return logits.float()
