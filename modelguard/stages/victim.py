"""Stage `victim`: train the victim (with outlier exposure) and the AM misinformation model.

Both are cached under paths.cache_dir, keyed by dataset, arch, seed and recipe, and shared
by every run and every concurrent job (spec attacks §4). ``victim.select`` chooses the victim
that is deployed: the last epoch, or (``best_test``, the original's checkpoint) the last
epoch reaching the best test accuracy. The misinformation model is always the last epoch's,
as in the original (spec attacks §12.20)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig
from tqdm.auto import tqdm

from modelguard.defense.am import misinformation_loss, outlier_exposure_loss
from modelguard.dataset.loading import BatchReader, indexed, labels_of, CyclicBatches, batch_sizes, read_batches
from modelguard.engine import BestOnTest, check_selection, predict_probs
from modelguard.metrics import accuracy
from modelguard.stages.common import build_model, device_of, load_data, loader_of, shared_artifact, victim_dir, victim_files
from modelguard.utils.io import save_tensors
from modelguard.utils.seed import make_generator, seed_torch, stream_seed


def train_victim(cfg: DictConfig, directory: Path) -> dict[str, Any]:
    recipe = cfg.victim
    select = check_selection(recipe.select, "victim.select")
    device = device_of(cfg)
    data = load_data(cfg)
    loader = loader_of(cfg)
    y_test = labels_of(data.victim_test)
    seed_torch(cfg.seed, "victim-init")  # model initialisation
    victim = build_model(cfg, data).to(device)
    misinformation = build_model(cfg, data).to(device) if recipe.misinformation else None
    if misinformation is not None:
        misinformation.load_state_dict(victim.state_dict())  # same initialisation (spec §5.1)
    opt_v = instantiate(recipe.optimizer)(params=victim.parameters())
    sched_v = instantiate(recipe.scheduler)(optimizer=opt_v)
    if misinformation is not None:
        opt_m = instantiate(recipe.optimizer)(params=misinformation.parameters())
        sched_m = instantiate(recipe.scheduler)(optimizer=opt_m)
    generator = make_generator(cfg.seed, "victim-batches")
    train_batches = read_batches(data.victim_train, None, recipe.batch_size, generator, loader)
    # OE batches come in a fixed cycling order, one per training batch and of its size.
    oe_batches = (BatchReader(data.outliers, CyclicBatches(len(data.outliers), batch_sizes(
        len(data.victim_train), recipe.batch_size)), loader, seed=stream_seed(cfg.seed, "victim-outliers"))
        if recipe.oe_lambda > 0 else None)

    def test_accuracy(model) -> float:
        return accuracy(predict_probs(model, data.victim_test, device=device, loader=loader), y_test)

    history = []
    best_on_test = BestOnTest()
    bar = tqdm(range(recipe.epochs), desc="victim", unit="epoch", disable=not cfg.progress, leave=False)
    for epoch in bar:
        victim.train()
        for x, y, *oe in _with_outliers(train_batches, oe_batches):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if oe:
                # one forward pass so BatchNorm sees both
                logits = victim(torch.cat([x, oe[0].to(device, non_blocking=True)]))
                loss = F.cross_entropy(logits[: len(x)], y) + recipe.oe_lambda * outlier_exposure_loss(logits[len(x):])
            else:
                loss = F.cross_entropy(victim(x), y)
            opt_v.zero_grad(set_to_none=True)
            loss.backward()
            opt_v.step()
            if misinformation is not None:
                misinformation.train()
                loss_m = misinformation_loss(misinformation(x), y)
                opt_m.zero_grad(set_to_none=True)
                loss_m.backward()
                opt_m.step()
        sched_v.step()
        if misinformation is not None:
            sched_m.step()
        acc = test_accuracy(victim)
        history.append({"epoch": epoch + 1, "test_acc": acc})
        if select == "best_test":
            best_on_test.update(victim, acc)
        bar.set_postfix(test_acc=f"{acc:.3f}")
    selected_epoch = len(history)
    if select == "best_test" and best_on_test.state is not None:
        victim.load_state_dict(best_on_test.state)
        selected_epoch = best_on_test.epoch
    victim.eval()
    save_tensors(victim.state_dict(), directory / "victim.pt")
    metrics: dict[str, Any] = {"victim/test_acc": history[selected_epoch - 1]["test_acc"] if history else
                               test_accuracy(victim),
                               "victim/selected_epoch": selected_epoch}
    if misinformation is not None:
        misinformation.eval()
        save_tensors(misinformation.state_dict(), directory / "misinformation.pt")
        metrics["victim/misinformation_acc"] = test_accuracy(misinformation)
        first_pool = indexed(data.query_pool, torch.arange(min(1000, len(data.query_pool))))
        ood = predict_probs(victim, first_pool, device=device, loader=loader).max(dim=1).values
        metrics["victim/pool_mean_top1"] = ood.mean().item()
    metrics["victim/history"] = history
    return metrics


def _with_outliers(train_batches, oe_batches):
    """(images, labels) batches, each followed by its outlier batch when there is one."""
    if oe_batches is None:
        return iter(train_batches)
    return ((x, y, oe[0]) for (x, y), oe in zip(train_batches, oe_batches))


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train the victim, or take it from the shared cache (another job may be training it: then
    this job waits for it). The record says which: ``victim/trained_here``, and the time spent
    waiting, ``time/victim_wait_s``, which the stage time ``time/victim_s`` leaves out."""
    built = shared_artifact(cfg, victim_dir(cfg), lambda d: train_victim(cfg, d), victim_files(cfg))
    metrics = {k: v for k, v in built.metrics.items() if k != "victim/history"}
    metrics["victim/trained_here"] = built.built_here
    metrics["time/victim_wait_s"] = round(built.wait_s, 3)
    return metrics


def precheck(cfg: DictConfig) -> None:
    """Load (check) the data when the victim must be trained here: missing or unreadable data then
    stops the run before the cache entry, its lock or any marker is created. A finished shared
    victim needs no data."""
    if not (victim_dir(cfg) / "done.json").exists():
        load_data(cfg)


def outputs(cfg: DictConfig) -> list[Path]:
    """What a finished victim stage leaves: the shared cache entry."""
    return [victim_dir(cfg) / name for name in ["done.json", *victim_files(cfg)]]
