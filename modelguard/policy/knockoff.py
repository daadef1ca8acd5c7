"""KnockoffNets "random" query policy (spec attacks §8.1)."""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from modelguard.api import DefendedAPI
from modelguard.attack.augment import query_view
from modelguard.attack.strategy import AttackStrategy
from modelguard.dataset.transforms import View
from modelguard.policy.base import QueryLog, QueryPolicy


class KnockoffRandom(QueryPolicy):
    """Query a seeded random permutation of the pool, ``budget`` unique images, in batches.

    With ``attack.augment_queries`` every pass queries a fresh view of each image
    (``attack.augment``: ``dataset`` = ``dataset_view``, the pool family's train transform that
    the query stage passes in). The transfer set keeps the plain images, and the clean answers
    are those of the first pass (spec attacks §12.13)."""

    def check_pool(self, attack: AttackStrategy, pool_size: int) -> None:
        if attack.budget > pool_size:  # unique images, drawn without replacement
            raise ValueError(f"attack.budget={attack.budget} exceeds the query pool of {pool_size} images; "
                             f"lower attack.budget or enlarge the pool (dataset.pool_size)")

    def collect(self, api: DefendedAPI, pool: torch.Tensor, attack: AttackStrategy,
                generator: torch.Generator, progress: bool = True,
                dataset_view: View | None = None) -> QueryLog:
        self.check_pool(attack, len(pool))
        index = torch.randperm(len(pool), generator=generator)[: attack.budget]
        view = query_view(attack.augment, dataset_view) if attack.augment_queries else None
        released_sum = None
        clean = None
        bar = tqdm(total=self.max_queries(attack), desc="query", unit="img", disable=not progress, leave=False)
        for qpass in range(attack.queries_per_image):
            outs, cleans = [], []
            for start in range(0, attack.budget, attack.query_batch_size):
                x = pool[index[start:start + attack.query_batch_size]]
                if view is not None:
                    x = view(x, generator)
                released, clean_batch = api.query(x, return_clean=True)
                outs.append(released.cpu())
                cleans.append(clean_batch.cpu())
                bar.update(len(x))
            released = torch.cat(outs).double()
            released_sum = released if released_sum is None else released_sum + released
            if qpass == 0:
                clean = torch.cat(cleans)
        bar.close()
        return QueryLog(inputs=pool[index], released=(released_sum / attack.queries_per_image).float(),
                        clean=clean, pool_index=index)
