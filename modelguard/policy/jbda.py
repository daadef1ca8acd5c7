"""JBDA-TR query policy (spec attacks §8.2): Jacobian-based dataset augmentation toward random
targets. Rounds: train a substitute on everything collected, synthesise `variants` new images
per collected image with a few PGD steps toward random classes, query them, repeat.

The original's behaviour is the default; ``compat`` switches reach the project's variants
(spec attacks §12.1, §12.2; docs/decisions.md):
- ``eps_from_defense`` (true): against MAD and ModelGuard-W the PGD radius is the defense's
  eps (the original merged the defense's ``epsilon`` into its own parameters), so the step
  is 1.85·eps/T = 0.23125 at eps 1.0. The query stage passes that eps in (``defense_eps``);
  against every other defense, or with false, the radius is ``step_eps``.
- ``eps_units`` (normalized): eps and the step are in the model's normalised units
  ((x − mean)/std), as in the original, whose images were normalised tensors; ``pixel``
  measures them in pixel units.
- ``clip_space`` (normalized): after the eps clip, the original clipped the *normalised*
  image to [0, 1], i.e. pixel values to [mean, mean + std]; ``pixel`` clips to the valid
  image range [0, 1].
Images stay pixel-space tensors in [0, 1]. The step and clips are done in normalised space
expressed in pixel coordinates (a normalised bound b is the pixel bound b·std + mean), which
is the same arithmetic as mapping to normalised space and back, and keeps the pixel/pixel
variant exactly the project's former behaviour.

The last round is truncated so the API is never asked for more than the budget (§12.10).
``substitute_weight_decay`` (5e-4, spec §11) is the weight decay of JBDA-TR's substitutes;
the substitute stage reads it from the policy.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from modelguard.api import DefendedAPI
from modelguard.attack.strategy import AttackStrategy
from modelguard.dataset.loading import IN_PROCESS, LoaderSettings, as_dataset, take
from modelguard.policy.base import QueryLog, QueryPolicy
from modelguard.utils.checks import check_number

SPACES = ("normalized", "pixel")
COMPAT_DEFAULTS: dict[str, Any] = {"eps_from_defense": True, "clip_space": "normalized", "eps_units": "normalized"}


class JacobianAugmentation(QueryPolicy):
    def __init__(self, seed_size: int = 1000, variants: int = 3, step_eps: float = 0.1, steps: int = 8,
                 step_scale: float = 1.85, max_rounds: int | None = None,
                 substitute_weight_decay: float | None = 5e-4, compat: Mapping[str, Any] | None = None):
        self.seed_size = check_number(seed_size, "policy.seed_size", integer=True, low=1,
                                      note="the original: 1000", fix="set policy.seed_size=1000")
        self.variants = check_number(variants, "policy.variants", integer=True, low=1,
                                     note="jbtr3 uses 3", fix="set policy.variants=3")
        self.step_eps = check_number(step_eps, "policy.step_eps", low=0, low_open=True,
                                     note="the paper: 0.1", fix="set policy.step_eps=0.1")
        self.steps = check_number(steps, "policy.steps", integer=True, low=1,
                                  note="the paper: 8", fix="set policy.steps=8")
        self.step_scale = check_number(step_scale, "policy.step_scale", low=0, low_open=True,
                                       note="the original: 1.85", fix="set policy.step_scale=1.85")
        if max_rounds is not None:
            max_rounds = check_number(max_rounds, "policy.max_rounds", integer=True, low=1,
                                      note="null: as many rounds as the budget allows", fix="set policy.max_rounds=null")
        if substitute_weight_decay is not None:
            substitute_weight_decay = check_number(
                substitute_weight_decay, "policy.substitute_weight_decay", low=0,
                note="or null to keep substitute.optimizer.weight_decay",
                fix="set policy.substitute_weight_decay=5e-4 (the original's JBDA-TR substitute)")
        self.step_size = step_scale * step_eps / steps
        self.max_rounds = max_rounds
        self.substitute_weight_decay = substitute_weight_decay
        self.compat = _check_compat(compat)
        super().__init__()

    def max_queries(self, attack: AttackStrategy) -> int:
        """Every seed and synthetic image is queried once: the budget in images is the budget in
        queries (``queries_per_image`` and query augmentation do not apply to JBDA-TR)."""
        return attack.budget

    def effective_eps(self, defense_eps: float | None) -> float:
        """The PGD radius: the defense's eps under compat.eps_from_defense, else step_eps."""
        if self.compat["eps_from_defense"] and defense_eps is not None:
            return float(defense_eps)
        return float(self.step_eps)

    def synthesise(self, substitute: torch.nn.Module, x: torch.Tensor, num_classes: int,
                   generator: torch.Generator, eps: float | None = None,
                   mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> torch.Tensor:
        """PGD toward a fresh random target class at every step (spec §8.2 step 3b).

        ``eps`` defaults to ``step_eps``; the step is step_scale·eps/steps. ``mean``/``std``
        are the dataset's normalisation (default: the substitute's own ``mean``/``std``),
        needed when eps_units or clip_space is "normalized"."""
        eps = self.step_eps if eps is None else float(eps)
        alpha = self.step_scale * eps / self.steps
        m, s = _stats(substitute, x, mean, std)
        unit = s if self.compat["eps_units"] == "normalized" else torch.ones_like(s)
        bound, step = eps * unit, alpha * unit  # in pixels, per channel
        lo, hi = (m, m + s) if self.compat["clip_space"] == "normalized" else (torch.zeros_like(m), torch.ones_like(m))
        substitute.eval()
        delta = torch.zeros_like(x)
        for _ in range(self.steps):
            delta.requires_grad_(True)
            target = torch.randint(num_classes, (len(x),), generator=generator).to(x.device)
            loss = F.cross_entropy(substitute(x + delta), target)
            (grad,) = torch.autograd.grad(loss, delta)
            with torch.no_grad():
                delta = torch.maximum(torch.minimum(delta - step * grad.sign(), bound), -bound)
                delta = torch.maximum(torch.minimum(x + delta, hi), lo) - x
        return (x + delta).detach()

    def collect(self, api: DefendedAPI, pool: Dataset | torch.Tensor, attack: AttackStrategy, generator: torch.Generator,
                progress: bool = True, *, train_substitute: Callable, relabel: Callable,
                defense_eps: float | None = None, mean: Sequence[float] | None = None,
                std: Sequence[float] | None = None, loader: LoaderSettings = IN_PROCESS) -> QueryLog:
        """``defense_eps``: the defense's eps when the original would have taken it (MAD,
        ModelGuard-W), else None; ``mean``/``std``: the dataset's normalisation.

        JBDA-TR holds its images in memory (its seed set from the pool, then the synthetic
        images it makes from them), as the original did: at most ``attack.budget`` images."""
        pool = as_dataset(pool)
        budget = attack.budget
        eps = self.effective_eps(defense_eps)
        self.metrics["jbda/step_eps"] = eps
        self.metrics["jbda/step_size"] = self.step_scale * eps / self.steps
        seeds = torch.randperm(len(pool), generator=generator)[: min(self.seed_size, budget)]
        inputs = [take(pool, seeds, loader)]
        index = [seeds]
        released, clean = api.query_all(inputs[0], attack.query_batch_size)
        answers, cleans = [released], [clean]
        rounds = 0
        bar = tqdm(total=budget, desc="query jbtr", unit="img", disable=not progress, leave=False)
        bar.update(api.queries)
        while api.queries < budget and (self.max_rounds is None or rounds < self.max_rounds):
            log = QueryLog(torch.cat(answers), torch.cat(cleans), torch.cat(index), inputs=torch.cat(inputs))
            labels, _ = relabel(api, log)
            substitute, metrics = train_substitute(log.inputs, labels.float(), f"round{rounds}")
            self.metrics[f"jbda/round{rounds}_size"] = len(log.inputs)
            self.metrics[f"jbda/round{rounds}_test_acc"] = metrics["surrogate/test_acc"]
            candidates = log.inputs
            remaining = budget - api.queries
            if self.variants * len(candidates) >= remaining:
                pick = torch.randperm(len(candidates), generator=generator)[: math.ceil(remaining / self.variants)]
                candidates = candidates[pick]
            device = next(substitute.parameters()).device
            for start in range(0, len(candidates), attack.query_batch_size):
                x = candidates[start:start + attack.query_batch_size].to(device)
                for _ in range(self.variants):
                    left = budget - api.queries
                    if left <= 0:
                        break
                    synthetic = self.synthesise(substitute, x, log.released.shape[1], generator, eps=eps,
                                                mean=mean, std=std)[:left].cpu()
                    r, c = api.query_all(synthetic, attack.query_batch_size)
                    inputs.append(synthetic)
                    index.append(torch.full((len(synthetic),), -1, dtype=torch.long))
                    answers.append(r)
                    cleans.append(c)
                    bar.update(len(synthetic))
                if api.queries >= budget:
                    break
            rounds += 1
        bar.close()
        self.metrics["jbda/rounds"] = rounds
        return QueryLog(torch.cat(answers), torch.cat(cleans), torch.cat(index), inputs=torch.cat(inputs))


def _check_compat(compat: Mapping[str, Any] | None) -> dict[str, Any]:
    given = dict(compat or {})
    unknown = sorted(set(given) - set(COMPAT_DEFAULTS))
    if unknown:
        raise ValueError(f"policy.compat has unknown key(s) {unknown}: allowed keys are "
                         f"{', '.join(COMPAT_DEFAULTS)}; remove them (e.g. policy.compat.eps_from_defense=false)")
    merged = {**COMPAT_DEFAULTS, **given}
    if not isinstance(merged["eps_from_defense"], bool):
        raise ValueError(f"policy.compat.eps_from_defense={merged['eps_from_defense']!r} is invalid: it must be "
                         "true (the original: MAD and ModelGuard-W set the PGD eps) or false (policy.step_eps always)")
    for key in ("clip_space", "eps_units"):
        if merged[key] not in SPACES:
            raise ValueError(f"policy.compat.{key}={merged[key]!r} is invalid: allowed values are "
                             f"{', '.join(SPACES)}; set policy.compat.{key}=normalized (the original) or "
                             f"policy.compat.{key}=pixel")
    return merged


def _stats(model: torch.nn.Module, x: torch.Tensor, mean, std) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalisation as [1, C, 1, 1] tensors on x's device (given, else the model's buffers)."""
    if mean is None or std is None:
        if not (hasattr(model, "mean") and hasattr(model, "std")):
            raise ValueError("JBDA-TR needs the dataset's mean/std for policy.compat eps_units/clip_space="
                             "normalized: pass mean= and std=, or use a modelguard.arch Classifier")
        mean, std = model.mean, model.std
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
    return m, s
