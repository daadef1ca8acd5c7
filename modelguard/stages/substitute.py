"""Stage `substitute`: train the attacker's copy on the transfer set and measure the damage.

Reports the final epoch's test accuracy and fidelity (agreement with the undefended victim on
the victim's test set) and, as the paper does, the best test accuracy over epochs (model
selection on the test set; spec attacks §12.12). ``substitute.select`` chooses the weights
kept: the last epoch, or (``best_test``, the original's checkpoint) the last epoch reaching
the best test accuracy. A policy may set the substitute's weight decay
(``policy.substitute_weight_decay``: JBDA-TR's 5e-4, spec attacks §11)."""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig

from modelguard.engine import BestOnTest, check_selection, fit, predict_probs, soft_cross_entropy
from modelguard.metrics import accuracy, agreement
from modelguard.stages.common import build_model, device_of, load_data, load_victim, output_dir
from modelguard.stages.query import load_transfer_inputs
from modelguard.utils.io import load_tensors, save_tensors
from modelguard.utils.seed import make_generator

ROTATIONS = 4


def rotation_loss(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """S4L self-supervision: predict which of 0/90/180/270 degree rotations was applied."""
    views = torch.cat([torch.rot90(x, k, dims=(2, 3)) for k in range(ROTATIONS)])
    targets = torch.arange(ROTATIONS, device=x.device).repeat_interleave(len(x))
    return F.cross_entropy(model.rotation_head(model.features(views)), targets)


def substitute_optimizer(cfg: DictConfig) -> Callable:
    """The substitute's optimizer factory: substitute.optimizer, with the policy's weight decay
    when the policy sets one (JBDA-TR: policy.substitute_weight_decay)."""
    weight_decay = instantiate(cfg.policy).substitute_weight_decay
    if weight_decay is None:
        return instantiate(cfg.substitute.optimizer)
    return instantiate(cfg.substitute.optimizer, weight_decay=float(weight_decay))


def make_trainer(cfg: DictConfig, data) -> Callable[..., tuple[torch.nn.Module, dict[str, Any]]]:
    """A function (inputs, soft labels, tag, keep="selected") -> (trained substitute, metrics).

    ``keep="selected"`` returns the weights substitute.select chooses; ``keep="last"`` the
    last epoch's whatever the selection (JBDA-TR synthesises from those, as the original)."""
    recipe = cfg.substitute
    select = check_selection(recipe.select, "substitute.select")
    attack = instantiate(cfg.attack)
    optimizer = substitute_optimizer(cfg)
    device = device_of(cfg)
    x_test, y_test = data.victim_test.tensors
    victim_test_probs = predict_probs(load_victim(cfg, data), x_test, device=device)
    pool = data.query_pool.tensors[0]

    def train(inputs: torch.Tensor, labels: torch.Tensor, tag: str, keep: str = "selected"):
        if keep not in ("selected", "last"):
            raise ValueError(f"keep={keep!r} is invalid: use keep='selected' (substitute.select) or keep='last'")
        torch.manual_seed(cfg.seed + 7)  # substitute initialisation
        model = build_model(cfg.arch, data)
        loss_fn = _loss_fn(model, attack.rotation_weight, pool, make_generator(cfg.seed, f"s4l-{tag}"))
        best_on_test = BestOnTest()

        def evaluate() -> dict[str, float]:
            probs = predict_probs(model, x_test, device=device)
            acc = accuracy(probs, y_test)
            if select == "best_test":
                best_on_test.update(model, acc)
            return {"test_acc": acc, "fidelity": agreement(probs, victim_test_probs)}

        history = fit(model, inputs, labels, epochs=recipe.epochs, batch_size=recipe.batch_size,
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
                       "surrogate/train_size": len(labels)}

    return train


def _loss_fn(model: torch.nn.Module, rotation_weight: float, pool: torch.Tensor, generator: torch.Generator):
    if rotation_weight <= 0:
        return lambda m, x, y: soft_cross_entropy(m(x), y)
    model.rotation_head = torch.nn.Linear(model.feature_dim, ROTATIONS)

    def loss(m, x, y):
        unlabeled = pool[torch.randint(len(pool), (len(x),), generator=generator)].to(x.device)
        return soft_cross_entropy(m(x), y) + rotation_weight * rotation_loss(m, unlabeled)

    return loss


def run(cfg: DictConfig) -> dict[str, Any]:
    data = load_data(cfg)
    transfer_path = output_dir(cfg) / "transfer.pt"
    if not transfer_path.exists():
        raise FileNotFoundError(f"no transfer set at {transfer_path}; run the query stage first")
    transfer = load_tensors(transfer_path)
    inputs = load_transfer_inputs(transfer, data.query_pool.tensors[0])
    model, metrics = make_trainer(cfg, data)(inputs, transfer["labels"], "final")
    save_tensors(model.state_dict(), output_dir(cfg) / "substitute.pt")
    return metrics
