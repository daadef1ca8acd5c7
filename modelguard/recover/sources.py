"""Where the attacker's recovery table gets its clean rows (spec defenses §9.1 step 3).

``attack.table_source`` is a node naming one of these classes (``_target_``), or null for
attacks without a table. The contract:

``clean_rows(size, generator, **runtime_inputs) -> (clean [M, K], index [M])``: at most
``size`` clean posterior samples, each tagged with the index of the query it stands for (the
simulation passes that query's side information). The runtime inputs are keyword parameters
named after the recovery glue's providers (``modelguard/stages/recovery.py``): ``clean`` (the
victim's clean answers on the queries), ``inputs`` (the queried images), ``shadow_models``
(trained for this source by the stage, cached) and ``device``. A source takes exactly the
ones it names; the others are never built.

The table itself is then the defended API's offline form applied to these rows
(``recover.table.simulate_table``).
"""
from __future__ import annotations


import torch

from modelguard.recover.shadows import SPLITS, plan_shadows, shadow_outputs
from modelguard.recover.table import dirichlet_table_clean
from modelguard.utils.checks import check_number


class TableSource:
    def clean_rows(self, size: int, generator: torch.Generator, **runtime_inputs) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class DirichletPrior(TableSource):
    """Dirichlet samples around the victim's clean answers on the queries, alpha = y·K·cf (the
    paper's strong adaptive attacker, bayes and D-DAE+; ``recover.table.dirichlet_table_clean``)."""

    def __init__(self, concentration_factor: float = 8.0):
        self.concentration_factor = check_number(
            concentration_factor, "attack.table_source.concentration_factor", low=0, low_open=True,
            note="the paper: 8", fix="set attack.table_source.concentration_factor=8")

    def clean_rows(self, size: int, generator: torch.Generator, *, clean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return dirichlet_table_clean(clean, size, self.concentration_factor, generator)

    def __repr__(self) -> str:
        return f"DirichletPrior(concentration_factor={self.concentration_factor})"


class ShadowModels(TableSource):
    """D-DAE: the outputs of ``count`` shadow models on the queries, one row per shadow and query
    (``recover.shadows``); ``split`` chooses their images (auto | disjoint | all). When that makes
    more rows than ``size``, a seeded subset of ``size`` rows is kept."""

    def __init__(self, count: int = 5, split: str = "auto"):
        count = check_number(count, "attack.table_source.count", integer=True, low=1,
                             note="the shadow models to train", fix="set attack.table_source.count=5")
        if split not in SPLITS:
            raise ValueError(f"attack.table_source.split={split!r} is invalid: allowed values are "
                             f"{', '.join(SPLITS)}; set attack.table_source.split=auto (disjoint image shares "
                             "when the pool has only K classes, the original's rule otherwise)")
        self.count = count
        self.split = split

    def plan(self, pool_labels: torch.Tensor, num_classes: int, seed: int):
        """The shadows' tasks (``recover.shadows.plan_shadows``): what the stage trains."""
        return plan_shadows(pool_labels, num_classes, self.count, seed, self.split)

    def clean_rows(self, size: int, generator: torch.Generator, *, inputs: torch.Tensor,
                   shadow_models: list[torch.nn.Module], device: torch.device | str = "cpu"
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        clean, index = shadow_outputs(shadow_models, inputs, device)
        if len(clean) > size:
            keep = torch.randperm(len(clean), generator=generator)[:size]
            clean, index = clean[keep], index[keep]
        return clean, index

    def __repr__(self) -> str:
        return f"ShadowModels(count={self.count}, split={self.split!r})"
