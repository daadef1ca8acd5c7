"""Plain training and inference loops (torchvision-reference style) over any dataset: batches
are read through ``modelguard.dataset.loading`` (tensors indexed directly in memory, a
DataLoader for datasets on disk)."""
from __future__ import annotations

from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from modelguard.dataset.loading import IN_PROCESS, LoaderSettings, as_dataset, read_batches

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]

SELECTIONS = ("last", "best_test")


def check_selection(value: str, knob: str) -> str:
    """Validate a model-selection knob (victim.select, substitute.select)."""
    if value not in SELECTIONS:
        raise ValueError(f"{knob}={value!r} is invalid: allowed values are {', '.join(SELECTIONS)}; set "
                         f"{knob}=last (the last epoch) or {knob}=best_test (the last epoch reaching the best "
                         "test accuracy, as the original's checkpoint; experiment=original_recipes)")
    return value


class BestOnTest:
    """Keeps a copy of the weights at the last epoch whose test accuracy is >= the best so far
    (the original's ``checkpoint.pth.tar`` rule, spec attacks §3 step 4)."""

    def __init__(self) -> None:
        self.acc = -1.0
        self.epoch = 0          # 1-based epoch of the kept weights (0: none yet)
        self.seen = 0
        self.state: dict[str, torch.Tensor] | None = None

    def update(self, model: nn.Module, acc: float) -> None:
        """Call once per epoch, after it, with that epoch's test accuracy."""
        self.seen += 1
        if acc >= self.acc:
            self.acc, self.epoch = acc, self.seen
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """mean over the batch of -sum_k y_k log softmax(z)_k (spec attacks §3)."""
    return -(target_probs * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def default_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = model(x)
    return F.cross_entropy(logits, y) if not y.is_floating_point() else soft_cross_entropy(logits, y)


def batches(n: int, batch_size: int, generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
    """Index batches over range(n); shuffled with ``generator`` when one is given."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


@torch.no_grad()
def predict_probs(model: nn.Module, inputs: torch.Tensor | Dataset, batch_size: int = 512,
                  device: torch.device | str = "cpu", loader: LoaderSettings = IN_PROCESS) -> torch.Tensor:
    """Softmax outputs of ``model`` (eval mode) on ``inputs`` (images, or a dataset whose items
    start with an image), in order, returned on the CPU."""
    was_training = model.training
    model.eval()
    out = [F.softmax(model(batch[0].to(device, non_blocking=True)), dim=1).cpu()
           for batch in read_batches(as_dataset(inputs), None, batch_size, settings=loader)]
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, model.num_classes)


def fit(model: nn.Module, data: Dataset, *, epochs: int, batch_size: int,
        optimizer: Callable, scheduler: Callable | None = None, generator: torch.Generator,
        device: torch.device | str = "cpu", loss_fn: LossFn = default_loss,
        evaluate: Callable[[], dict[str, float]] | None = None, desc: str = "train",
        progress: bool = True, loader: LoaderSettings = IN_PROCESS) -> list[dict[str, float]]:
    """Train ``model`` in place on ``data`` (items: image, target); ``optimizer``/``scheduler``
    are factories (Hydra partials). Each epoch visits the items in a fresh ``generator`` order.

    Returns one record per epoch: the mean training loss plus whatever ``evaluate`` reports.
    """
    if len(data) == 0:
        raise ValueError(f"{desc}: nothing to train on (0 samples)")
    model.to(device)
    opt = optimizer(params=model.parameters())
    sched = scheduler(optimizer=opt) if scheduler is not None else None
    reader = read_batches(data, None, batch_size, generator, loader)
    history: list[dict[str, float]] = []
    bar = tqdm(range(epochs), desc=desc, unit="epoch", disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        total, seen = 0.0, 0
        for x, y in reader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = loss_fn(model, x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(x)
            seen += len(x)
        if sched is not None:
            sched.step()
        record = {"epoch": epoch + 1, "loss": total / seen}
        if evaluate is not None:
            model.eval()
            record.update(evaluate())
        history.append(record)
        bar.set_postfix({k: f"{v:.3f}" for k, v in record.items() if k != "epoch"})
    model.eval()
    return history
