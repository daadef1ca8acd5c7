"""Training the attacker's substitute from the config: used by the substitute stage (the final
substitute) and handed by the query stage to policies that train substitutes while they query
(JBDA-TR's rounds).

The substitute's weights kept: ``substitute.select`` = the last epoch, or (``best_test``, the
original's checkpoint) the last epoch reaching the best test accuracy. A policy may set the
substitute's weight decay (``policy.substitute_weight_decay``: JBDA-TR's 5e-4, spec attacks §11)."""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils.data import Dataset
from hydra.utils import instantiate
from omegaconf import DictConfig

from modelguard.attack.s4l import substitute_loss
from modelguard.engine import BestOnTest, check_selection, fit, predict_probs
from modelguard.metrics import accuracy, agreement
from modelguard.dataset.loading import labels_of
from modelguard.stages.common import build_model, device_of, load_victim, loader_of
from modelguard.utils.seed import make_generator, seed_torch


def substitute_optimizer(cfg: DictConfig) -> Callable:
    """The substitute's optimizer factory: substitute.optimizer, with the policy's weight decay
    when the policy sets one (JBDA-TR: policy.substitute_weight_decay)."""
    weight_decay = instantiate(cfg.policy).substitute_weight_decay
    if weight_decay is None:
        return instantiate(cfg.substitute.optimizer)
    return instantiate(cfg.substitute.optimizer, weight_decay=float(weight_decay))


def make_trainer(cfg: DictConfig, data) -> Callable[..., tuple[torch.nn.Module, dict[str, Any]]]:
    """A function (transfer set, tag, keep="selected") -> (trained substitute, metrics); the
    transfer set is a dataset of (image, soft label) items.

    ``keep="selected"`` returns the weights substitute.select chooses; ``keep="last"`` the
    last epoch's whatever the selection (JBDA-TR synthesises from those, as the original)."""
    recipe = cfg.substitute
    select = check_selection(recipe.select, "substitute.select")
    attack = instantiate(cfg.attack)
    optimizer = substitute_optimizer(cfg)
    device = device_of(cfg)
    loader = loader_of(cfg)
    y_test = labels_of(data.victim_test)
    victim_test_probs = predict_probs(load_victim(cfg, data), data.victim_test, device=device, loader=loader)

    def train(transfer: Dataset, tag: str, keep: str = "selected"):
        if keep not in ("selected", "last"):
            raise ValueError(f"keep={keep!r} is invalid: use keep='selected' (substitute.select) or keep='last'")
        seed_torch(cfg.seed, "substitute-init")  # the same initialisation for every substitute of the run
        model = build_model(cfg, data)
        loss_fn = substitute_loss(model, attack.rotation_weight, data.query_pool, make_generator(cfg.seed, f"s4l-{tag}"),
                                  loader=loader)
        best_on_test = BestOnTest()

        def evaluate() -> dict[str, float]:
            probs = predict_probs(model, data.victim_test, device=device, loader=loader)
            acc = accuracy(probs, y_test)
            if select == "best_test":
                best_on_test.update(model, acc)
            return {"test_acc": acc, "fidelity": agreement(probs, victim_test_probs)}

        history = fit(model, transfer, epochs=recipe.epochs, batch_size=recipe.batch_size, loader=loader,
                      optimizer=optimizer, scheduler=instantiate(recipe.scheduler),
                      generator=make_generator(cfg.seed, f"substitute-{tag}"), device=device,
                      loss_fn=loss_fn, evaluate=evaluate, desc=f"substitute {tag}", progress=cfg.progress)
        best = max(history, key=lambda r: r["test_acc"])
        selected_epoch = len(history)
        if select == "best_test" and best_on_test.state is not None:
            selected_epoch = best_on_test.epoch
            if keep == "selected":
                model.load_state_dict(best_on_test.state)
        return model, {"surrogate/test_acc": history[-1]["test_acc"], "surrogate/fidelity": history[-1]["fidelity"],
                       "surrogate/best_test_acc": best["test_acc"], "surrogate/best_fidelity": best["fidelity"],
                       "surrogate/selected_epoch": selected_epoch,
                       "surrogate/train_size": len(transfer)}

    return train
