"""D-DAE shadow models (spec attacks §6): N models trained on the query pool, whose outputs on
the attacker's queries are plausible clean posteriors (``sources.ShadowModels``).

Each shadow i has its own task (``plan_shadows``):
- a class subset of size K of the pool's classes, drawn from its own named generator stream,
  in a seeded order that is its label map (the n-th chosen class becomes label n), as the
  original's random class subsets;
- its own images (``split``): every image of its classes ("all", the original), or only its
  own share of the pool ("disjoint": a seeded, class-stratified split of the pool into N
  parts). "auto" picks "disjoint" when the pool has exactly K classes: there every class
  subset is the whole pool, so with "all" the shadows would learn one task under permuted
  labels (the embedded default: 10 Fashion-MNIST classes, K = 10);
- its own initialisation and batch order (named streams ``shadow-<i>-init``/``-batches``);
- where the pool has a test split (data on disk: ``pool_test``), its own test split, the test
  images of its classes under its labels, on which it keeps the best epoch (``train_shadows``).

Plain functions of tensors, a model factory and a training recipe; the query stage caches the
trained shadows (``stages/recovery.py``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch.utils.data import Dataset

from modelguard.dataset.loading import IN_PROCESS, LoaderSettings, indexed, labels_of
from modelguard.engine import BestOnTest, fit, predict_probs
from modelguard.metrics import accuracy
from modelguard.utils.seed import make_generator, seed_torch

SPLITS = ("auto", "disjoint", "all")


@dataclass
class ShadowTask:
    index: torch.Tensor    # [n] pool indices the shadow trains on
    labels: torch.Tensor   # [n] its labels 0..K-1 for those images
    classes: torch.Tensor  # [K] the pool classes it uses; classes[n] becomes label n


def resolve_split(split: str, pool_classes: int, k: int) -> str:
    if split == "auto":
        return "disjoint" if pool_classes <= k else "all"
    return split


def plan_shadows(pool_labels: torch.Tensor, k: int, count: int, seed: int, split: str = "auto") -> list[ShadowTask]:
    """What each of ``count`` shadows trains on (no training): see the module docstring."""
    classes = torch.unique(pool_labels)
    if len(classes) < k:
        raise ValueError(f"attack.table_source=ShadowModels needs a labelled query pool with at least {k} classes "
                         f"(the victim's K); this pool has {len(classes)}. Use attack=ddae_plus instead")
    mode = resolve_split(split, len(classes), k)
    share = torch.zeros(len(pool_labels), dtype=torch.long)
    if mode == "disjoint":
        g = make_generator(seed, "shadow-shares")
        for c in classes.tolist():  # stratified: every class spread evenly over the shares
            members = (pool_labels == c).nonzero().squeeze(1)
            members = members[torch.randperm(len(members), generator=g)]
            offset = int(torch.randint(count, (1,), generator=g))
            share[members] = (torch.arange(len(members)) + offset) % count
    tasks = []
    for i in range(count):
        g = make_generator(seed, f"shadow-{i}-labels")
        chosen = classes[torch.randperm(len(classes), generator=g)[:k]]
        relabel = torch.full((int(classes.max()) + 1,), -1, dtype=torch.long)
        relabel[chosen] = torch.arange(k)
        keep = relabel[pool_labels] >= 0
        if mode == "disjoint":
            keep &= share == i
        index = keep.nonzero().squeeze(1)
        if len(index) == 0:
            raise ValueError(f"shadow {i} of attack.table_source.count={count} gets no pool images with "
                             f"attack.table_source.split={split}; lower attack.table_source.count or set "
                             "attack.table_source.split=all")
        tasks.append(ShadowTask(index=index, labels=relabel[pool_labels[index]], classes=chosen))
    return tasks


def shadow_test_set(task: ShadowTask, test_pool: Dataset) -> Dataset:
    """The shadow's test split (spec attacks §6 step 2): the images of ``test_pool`` (the pool's
    test split) of the task's classes, relabelled as the task relabels them (classes[n] -> n)."""
    labels = labels_of(test_pool)
    size = int(max(int(task.classes.max()), int(labels.max()) if len(labels) else 0)) + 1
    relabel = torch.full((size,), -1, dtype=torch.long)
    relabel[task.classes] = torch.arange(len(task.classes))
    keep = (relabel[labels] >= 0).nonzero().squeeze(1)
    return indexed(test_pool, keep, relabel[labels[keep]])


def test_accuracy(model: torch.nn.Module, test_set: Dataset, device, loader: LoaderSettings) -> float:
    return accuracy(predict_probs(model, test_set, device=device, loader=loader), labels_of(test_set))


def train_shadows(tasks: list[ShadowTask], pool: Dataset, make_model: Callable[[], torch.nn.Module], *,
                  epochs: int, batch_size: int, optimizer: Callable, scheduler: Callable | None, seed: int,
                  device: torch.device | str = "cpu", progress: bool = True,
                  loader: LoaderSettings = IN_PROCESS, test_pool: Dataset | None = None,
                  selections: list[dict] | None = None) -> list[torch.nn.Module]:
    """One model per task, from ``make_model()`` at the seed of its stream ``shadow-<i>-init``,
    trained on its images of ``pool`` (the pool under its train transform, where the data has one)
    with batches from ``shadow-<i>-batches`` (``optimizer``/``scheduler``: factories, as
    ``engine.fit`` takes them).

    With ``test_pool`` (the pool's test split) each shadow keeps the weights of the last epoch
    reaching its best accuracy on its own test split (``shadow_test_set``; ``engine.BestOnTest``,
    the original's checkpoint, spec attacks §6 step 4 and §3); without it, or when that split is
    empty, the last epoch's. ``selections``, when given, receives one record per shadow: the
    selected epoch and its test accuracy (None without a test split)."""
    models = []
    for i, task in enumerate(tasks):
        seed_torch(seed, f"shadow-{i}-init")
        model = make_model()
        test_set = shadow_test_set(task, test_pool) if test_pool is not None else None
        best = BestOnTest()
        evaluate = None
        if test_set is not None and len(test_set) > 0:
            def evaluate(model=model, test_set=test_set, best=best) -> dict[str, float]:
                acc = test_accuracy(model, test_set, device, loader)
                best.update(model, acc)
                return {"test_acc": acc}
        history = fit(model, indexed(pool, task.index, task.labels), epochs=epochs, batch_size=batch_size,
                      loader=loader, optimizer=optimizer, scheduler=scheduler,
                      generator=make_generator(seed, f"shadow-{i}-batches"), device=device, evaluate=evaluate,
                      desc=f"shadow {i + 1}/{len(tasks)}", progress=progress)
        if best.state is not None:
            model.load_state_dict(best.state)
        if selections is not None:
            selections.append({"selected_epoch": best.epoch if best.state is not None else len(history),
                               "test_acc": best.acc if best.state is not None else None,
                               "test_size": 0 if test_set is None else len(test_set)})
        models.append(model.eval())
    return models


def shadow_outputs(models: list[torch.nn.Module], inputs: torch.Tensor | Dataset, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean samples = every shadow's softmax on every input, tagged with the input's index."""
    outs = [predict_probs(m, inputs, device=device) for m in models]
    index = torch.arange(len(inputs)).repeat(len(models))
    return torch.cat(outs), index
