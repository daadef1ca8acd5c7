"""The contract every query policy (``conf/policy/<option>.yaml``) follows.

``collect(api, pool, attack, generator, progress=True, **runtime_inputs) -> QueryLog`` queries
the defended API and returns what it collected. The runtime inputs a policy needs beyond these
are keyword parameters of its ``collect``, named after the query stage's providers
(``modelguard/stages/query.py``: ``dataset_view``, ``train_substitute``, ``relabel``,
``defense_eps``, ``mean``, ``std``); the stage builds and passes exactly the ones ``collect``
names, nothing else.

``attack.budget`` counts **images**: the images whose answers the attacker keeps, i.e. the size
of its transfer set (docs/decisions.md, "Budget"). ``max_queries(attack)`` is how many API calls
that costs: ``budget × queries_per_image`` for KnockoffNets (smoothing, 2-QPI), ``budget`` for
JBDA-TR, which queries every image once. The query stage gives the API exactly that budget.

``substitute_weight_decay`` (None: ``substitute.optimizer``'s) is the weight decay of the
substitutes trained on this policy's transfer set; ``metrics`` is filled by ``collect``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset, TensorDataset

from modelguard.attack.strategy import AttackStrategy
from modelguard.dataset.loading import indexed


@dataclass
class QueryLog:
    """What a query policy collected: which images, the answers as released, and (for evaluation
    and the strong adaptive attacker of spec §12.4 only) the victim's clean answers.

    Pool images are kept by index only, so a log never holds the pool in memory; ``inputs``
    holds the images themselves only for a policy that makes its own (JBDA-TR's synthetic
    images, with its seeds)."""

    released: torch.Tensor        # [N, K] released answers (averaged over passes)
    clean: torch.Tensor           # [N, K] clean answers on the first pass
    pool_index: torch.Tensor      # [N] index into the query pool, -1 for synthetic images
    inputs: torch.Tensor | None = None  # [N, C, H, W] the queried images, when not all are pool images

    def images(self, pool: Dataset) -> Dataset:
        """The queried images, in order, as a dataset: ``inputs`` when held, else the pool's
        images at ``pool_index``."""
        if self.inputs is not None:
            return TensorDataset(self.inputs)
        return indexed(pool, self.pool_index)


class QueryPolicy:
    substitute_weight_decay: float | None = None

    def __init__(self) -> None:
        self.metrics: dict[str, Any] = {}

    def check_pool(self, attack: AttackStrategy, pool_size: int, pool_name: str | None = None) -> None:
        """Refuse an attack this policy cannot carry out on a pool of ``pool_size`` images
        (ValueError naming the knob); the query stage asks before any stage runs. ``pool_name``:
        the dataset on disk the pool is (its size is fixed), None for a pool the dataset option
        sizes (``dataset.pool_size``)."""

    def max_queries(self, attack: AttackStrategy) -> int:
        """API calls this policy spends for ``attack.budget`` images (the API's budget)."""
        return attack.budget * attack.queries_per_image

    def collect(self, api, pool: Dataset | torch.Tensor, attack: AttackStrategy, generator: torch.Generator,
                progress: bool = True) -> QueryLog:
        raise NotImplementedError
