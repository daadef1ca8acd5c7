"""An attack strategy: the attacker's knobs of spec attacks §9 (one YAML per strategy)."""
from __future__ import annotations

from dataclasses import dataclass

TABLE_SOURCES = ("none", "dirichlet", "shadows")


@dataclass
class AttackStrategy:
    """What the attacker does with the defended API.

    Args:
        budget: unique images queried (KnockoffNets) or total queries (JBDA-TR).
        query_batch_size: images per API call.
        hard_label: train on one-hot argmax labels (after averaging and recovery).
        queries_per_image: passes over the images; answers are averaged (smoothing: 3).
        augment_queries: query augmented views instead of the plain image (smoothing).
        rotation_weight: weight of the S4L rotation loss on unlabeled pool images (0 = off).
        table_source: clean samples of the recovery table: "none", "dirichlet" (around the
            victim's clean outputs on the queries, the spec's strong adaptive attacker) or
            "shadows" (shadow models' outputs on the queries, D-DAE).
        table_rows_per_query: recovery-table rows per query (the paper: 1e6 / 5e4 = 20).
        concentration_factor: Dirichlet sharpness cf (alpha = y * K * cf).
        shadow_count: shadow models trained for table_source="shadows" (the paper: 20).
        shadow_epochs: training epochs of each shadow model.
    """

    budget: int = 10000
    query_batch_size: int = 32
    hard_label: bool = False
    queries_per_image: int = 1
    augment_queries: bool = False
    rotation_weight: float = 0.0
    table_source: str = "none"
    table_rows_per_query: int = 20
    concentration_factor: float = 8.0
    shadow_count: int = 0
    shadow_epochs: int = 3

    def __post_init__(self) -> None:
        if self.budget < 1:
            raise ValueError(f"attack.budget={self.budget} is invalid: it must be >= 1 query")
        if self.query_batch_size < 1:
            raise ValueError(f"attack.query_batch_size={self.query_batch_size} is invalid: it must be >= 1")
        if self.queries_per_image < 1:
            raise ValueError(f"attack.queries_per_image={self.queries_per_image} is invalid: it must be >= 1")
        if self.rotation_weight < 0:
            raise ValueError(f"attack.rotation_weight={self.rotation_weight} is invalid: it must be >= 0")
        if self.table_source not in TABLE_SOURCES:
            raise ValueError(f"attack.table_source={self.table_source!r} is invalid: choose one of "
                             f"{', '.join(TABLE_SOURCES)}")
        if self.table_rows_per_query < 1:
            raise ValueError(f"attack.table_rows_per_query={self.table_rows_per_query} is invalid: it must be >= 1")
        if self.concentration_factor <= 0:
            raise ValueError(f"attack.concentration_factor={self.concentration_factor} is invalid: it must be > 0")
        if self.table_source == "shadows" and self.shadow_count < 1:
            raise ValueError(f"attack.shadow_count={self.shadow_count} is invalid with attack.table_source=shadows: "
                             "train at least one shadow model, e.g. attack.shadow_count=5")
