"""An attack strategy: the attacker's knobs of spec attacks §9 (one YAML per strategy)."""
from __future__ import annotations

from dataclasses import dataclass

from modelguard.attack.augment import check_augment
from modelguard.dataset.transforms import View
from modelguard.recover.sources import TableSource
from modelguard.utils.checks import check_flag, check_number


@dataclass
class AttackStrategy:
    """What the attacker does with the defended API.

    Args:
        budget: images the attacker has answered, i.e. the size of its transfer set. The
            queries they cost depend on the policy (``policy.max_queries``): budget ×
            queries_per_image with KnockoffNets, budget with JBDA-TR (docs/decisions.md).
        query_batch_size: images per API call.
        hard_label: train on one-hot argmax labels (after averaging and recovery).
        queries_per_image: passes over the images; answers are averaged (smoothing: 3).
        augment_queries: query augmented views instead of the plain image (smoothing).
        augment: which view: None (the query pool family's train transform, as the
            original; the identity for the embedded MNIST family), or a view object of
            ``modelguard.dataset.transforms`` (``ShiftView``: random ±4 px shifts, ...).
        rotation_weight: weight of the S4L rotation loss on unlabeled pool images (0 = off).
        table_source: where the recovery table's clean rows come from, a
            ``modelguard.recover.sources`` object (``attack.table_source`` names its class:
            ``DirichletPrior``, the spec's strong adaptive attacker; ``ShadowModels``, D-DAE),
            or None for attacks without recovery.
        table_rows_per_query: recovery-table rows per query (the paper: 1e6 / 5e4 = 20).
    """

    budget: int = 10000
    query_batch_size: int = 32
    hard_label: bool = False
    queries_per_image: int = 1
    augment_queries: bool = False
    augment: View | None = None
    rotation_weight: float = 0.0
    table_source: TableSource | None = None
    table_rows_per_query: int = 20

    def __post_init__(self) -> None:
        self.budget = check_number(self.budget, "attack.budget", low=1, integer=True,
                                   note="images answered, the size of the transfer set",
                                   fix="set attack.budget=10000 (a whole number of images)")
        self.query_batch_size = check_number(self.query_batch_size, "attack.query_batch_size", low=1, integer=True,
                                             note="images per API call", fix="set attack.query_batch_size=32")
        self.hard_label = check_flag(self.hard_label, "attack.hard_label", fix="set attack.hard_label=false "
                                     "(or attack=top1, which sets it)")
        self.queries_per_image = check_number(self.queries_per_image, "attack.queries_per_image", low=1,
                                              integer=True, fix="set attack.queries_per_image=1 (smoothing: 3)")
        self.augment_queries = check_flag(self.augment_queries, "attack.augment_queries",
                                          fix="set attack.augment_queries=false (or attack=smoothing, which sets it)")
        self.augment = check_augment(self.augment)
        self.rotation_weight = check_number(self.rotation_weight, "attack.rotation_weight", low=0,
                                            note="the S4L rotation loss; 0 turns it off",
                                            fix="set attack.rotation_weight=0.0 (or attack=s4l: 1.0)")
        if self.table_source is not None and not isinstance(self.table_source, TableSource):
            raise ValueError(f"attack.table_source={self.table_source!r} is invalid: it is a node naming a table "
                             "source class (_target_: modelguard.recover.sources.DirichletPrior or "
                             "modelguard.recover.sources.ShadowModels) or null; choose attack=bayes, ddae_plus "
                             "or ddae, which set it")
        self.table_rows_per_query = check_number(self.table_rows_per_query, "attack.table_rows_per_query", low=1,
                                                 integer=True, note="the paper: 20",
                                                 fix="set attack.table_rows_per_query=20")
