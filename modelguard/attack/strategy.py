"""An attack strategy: the attacker's knobs of spec attacks §9 (one YAML per strategy)."""
from __future__ import annotations

from dataclasses import dataclass

from modelguard.attack.augment import check_augment

TABLE_SOURCES = ("none", "dirichlet", "shadows")
SHADOW_SPLITS = ("auto", "disjoint", "all")


@dataclass
class AttackStrategy:
    """What the attacker does with the defended API.

    Args:
        budget: unique images queried (KnockoffNets) or total queries (JBDA-TR).
        query_batch_size: images per API call.
        hard_label: train on one-hot argmax labels (after averaging and recovery).
        queries_per_image: passes over the images; answers are averaged (smoothing: 3).
        augment_queries: query augmented views instead of the plain image (smoothing).
        augment: which view: "dataset" (the query pool family's train transform, as the
            original; the identity for the embedded MNIST family), or one named directly:
            "none", "shift" (random ±4 px shifts), "shift_flip".
        rotation_weight: weight of the S4L rotation loss on unlabeled pool images (0 = off).
        table_source: clean samples of the recovery table: "none", "dirichlet" (around the
            victim's clean outputs on the queries, the spec's strong adaptive attacker) or
            "shadows" (shadow models' outputs on the queries, D-DAE).
        table_rows_per_query: recovery-table rows per query (the paper: 1e6 / 5e4 = 20).
        concentration_factor: Dirichlet sharpness cf (alpha = y * K * cf).
        shadow_count: shadow models trained for table_source="shadows" (the paper: 20).
        shadow_epochs: training epochs of each shadow model.
        shadow_split: which pool images each shadow trains on (each shadow also has its own
            seeded class subset of size K, in a seeded order that is its label map): "all"
            (the original: every image of its classes), "disjoint" (shadow i only its own
            share of the pool, a seeded class-stratified split into shadow_count parts), or
            "auto" (disjoint when the pool has exactly K classes, where every class subset is
            the whole pool and the shadows would otherwise learn one task; "all" otherwise).
    """

    budget: int = 10000
    query_batch_size: int = 32
    hard_label: bool = False
    queries_per_image: int = 1
    augment_queries: bool = False
    augment: str = "dataset"
    rotation_weight: float = 0.0
    table_source: str = "none"
    table_rows_per_query: int = 20
    concentration_factor: float = 8.0
    shadow_count: int = 0
    shadow_epochs: int = 3
    shadow_split: str = "auto"

    def __post_init__(self) -> None:
        if self.budget < 1:
            raise ValueError(f"attack.budget={self.budget} is invalid: it must be >= 1 query")
        if self.query_batch_size < 1:
            raise ValueError(f"attack.query_batch_size={self.query_batch_size} is invalid: it must be >= 1")
        if self.queries_per_image < 1:
            raise ValueError(f"attack.queries_per_image={self.queries_per_image} is invalid: it must be >= 1")
        check_augment(self.augment)
        if self.rotation_weight < 0:
            raise ValueError(f"attack.rotation_weight={self.rotation_weight} is invalid: it must be >= 0")
        if self.table_source not in TABLE_SOURCES:
            raise ValueError(f"attack.table_source={self.table_source!r} is invalid: choose one of "
                             f"{', '.join(TABLE_SOURCES)}")
        if self.table_rows_per_query < 1:
            raise ValueError(f"attack.table_rows_per_query={self.table_rows_per_query} is invalid: it must be >= 1")
        if self.concentration_factor <= 0:
            raise ValueError(f"attack.concentration_factor={self.concentration_factor} is invalid: it must be > 0")
        if self.shadow_split not in SHADOW_SPLITS:
            raise ValueError(f"attack.shadow_split={self.shadow_split!r} is invalid: allowed values are "
                             f"{', '.join(SHADOW_SPLITS)}; set attack.shadow_split=auto (disjoint image shares "
                             "when the pool has only K classes, the original's rule otherwise)")
        if self.shadow_epochs < 1:
            raise ValueError(f"attack.shadow_epochs={self.shadow_epochs} is invalid: it must be >= 1 "
                             "(the paper: 5)")
        if self.table_source == "shadows" and self.shadow_count < 1:
            raise ValueError(f"attack.shadow_count={self.shadow_count} is invalid with attack.table_source=shadows: "
                             "train at least one shadow model, e.g. attack.shadow_count=5")
