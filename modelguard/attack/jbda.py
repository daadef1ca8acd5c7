"""JBDA-TR query policy (spec attacks §8.2): Jacobian-based dataset augmentation toward random
targets. Rounds: train a substitute on everything collected, synthesise `variants` new images
per collected image with a few PGD steps toward random classes, query them, repeat.

Decisions on the original's oddities (spec attacks §12.1, §12.2, §12.10):
- the PGD radius `step_eps` is the attack's own knob, never taken from the defense's eps;
- images live in pixel space [0, 1] (normalisation is inside the model), so the clip to the
  valid image range is the correct one, and it is applied after the eps clip;
- the last round is truncated so the API is never asked for more than the budget.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from modelguard.api import DefendedAPI
from modelguard.attack.knockoff import QueryLog
from modelguard.attack.strategy import AttackStrategy


class JacobianAugmentation:
    needs_trainer = True

    def __init__(self, seed_size: int = 500, variants: int = 3, step_eps: float = 0.1, steps: int = 8,
                 step_scale: float = 1.85, max_rounds: int | None = None):
        if seed_size < 1:
            raise ValueError(f"policy.seed_size={seed_size} is invalid: it must be >= 1")
        if variants < 1:
            raise ValueError(f"policy.variants={variants} is invalid: it must be >= 1 (jbtr3 uses 3)")
        if step_eps <= 0 or steps < 1:
            raise ValueError(f"policy.step_eps={step_eps}, policy.steps={steps} are invalid: need step_eps > 0 "
                             "and steps >= 1 (the paper: 0.1 and 8)")
        self.seed_size = seed_size
        self.variants = variants
        self.step_eps = step_eps
        self.steps = steps
        self.step_size = step_scale * step_eps / steps
        self.max_rounds = max_rounds
        self.metrics: dict[str, Any] = {}

    def synthesise(self, substitute: torch.nn.Module, x: torch.Tensor, num_classes: int,
                   generator: torch.Generator) -> torch.Tensor:
        """PGD toward a fresh random target class at every step (spec §8.2 step 3b)."""
        substitute.eval()
        delta = torch.zeros_like(x)
        for _ in range(self.steps):
            delta.requires_grad_(True)
            target = torch.randint(num_classes, (len(x),), generator=generator).to(x.device)
            loss = F.cross_entropy(substitute(x + delta), target)
            (grad,) = torch.autograd.grad(loss, delta)
            with torch.no_grad():
                delta = (delta - self.step_size * grad.sign()).clamp(-self.step_eps, self.step_eps)
                delta = (x + delta).clamp(0, 1) - x
        return (x + delta).detach()

    def collect(self, api: DefendedAPI, pool: torch.Tensor, attack: AttackStrategy, generator: torch.Generator,
                train_substitute: Callable, relabel: Callable, progress: bool = True) -> QueryLog:
        budget = attack.budget
        seeds = torch.randperm(len(pool), generator=generator)[: min(self.seed_size, budget)]
        inputs = [pool[seeds]]
        index = [seeds]
        released, clean = api.query_all(pool[seeds], attack.query_batch_size)
        answers, cleans = [released], [clean]
        rounds = 0
        bar = tqdm(total=budget, desc="query jbtr", unit="img", disable=not progress, leave=False)
        bar.update(api.queries)
        while api.queries < budget and (self.max_rounds is None or rounds < self.max_rounds):
            log = QueryLog(torch.cat(inputs), torch.cat(answers), torch.cat(cleans), torch.cat(index))
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
                    synthetic = self.synthesise(substitute, x, log.released.shape[1], generator)[:left].cpu()
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
        return QueryLog(torch.cat(inputs), torch.cat(answers), torch.cat(cleans), torch.cat(index))
