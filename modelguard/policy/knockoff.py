"""KnockoffNets "random" query policy (spec attacks §8.1)."""
from __future__ import annotations

import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from modelguard.api import DefendedAPI
from modelguard.attack.augment import query_view
from modelguard.attack.strategy import AttackStrategy
from modelguard.dataset.loading import IN_PROCESS, LoaderSettings, as_dataset, indexed, read_batches
from modelguard.dataset.transforms import View
from modelguard.policy.base import QueryLog, QueryPolicy
from modelguard.utils.seed import stream_seed


class KnockoffRandom(QueryPolicy):
    """Query a seeded random permutation of the pool, ``budget`` unique images, in batches.

    With ``attack.augment_queries`` every pass queries a fresh view of each image: ``attack.augment``
    when set; else, when the query stage passes ``pool_augmented`` (a pool on disk: the same
    images under the pool family's per-image train transform, RandomResizedCrop and flip for the
    imagenet family, as the original's ``train_transform=1``), the images read from it afresh;
    else ``dataset_view``, the pool family's batched train view. The transfer set keeps the plain
    images, and the clean answers are those of the first pass (spec attacks §12.13)."""

    def check_pool(self, attack: AttackStrategy, pool_size: int, pool_name: str | None = None) -> None:
        if attack.budget > pool_size:  # unique images, drawn without replacement
            if pool_name is None:  # a pool the dataset option sizes (embedded, synthetic)
                raise ValueError(f"attack.budget={attack.budget} exceeds the query pool of {pool_size} images; "
                                 f"lower attack.budget or enlarge the pool (dataset.pool_size)")
            raise ValueError(f"attack.budget={attack.budget} exceeds the query pool {pool_name} (dataset.pool) of "
                             f"{pool_size} images; set attack.budget={pool_size} or lower, or choose a larger pool "
                             "(dataset/pool=<option>, conf/dataset/pool/)")

    def collect(self, api: DefendedAPI, pool: Dataset | torch.Tensor, attack: AttackStrategy,
                generator: torch.Generator, progress: bool = True,
                dataset_view: View | None = None, pool_augmented: Dataset | None = None,
                loader: LoaderSettings = IN_PROCESS) -> QueryLog:
        pool = as_dataset(pool)
        self.check_pool(attack, len(pool), getattr(pool, "name", None))
        if pool_augmented is not None and len(pool_augmented) != len(pool):
            raise ValueError(f"pool_augmented holds {len(pool_augmented)} images, the query pool {len(pool)}: it must "
                             "be the pool's images (same indices) under the train transform")
        index = torch.randperm(len(pool), generator=generator)[: attack.budget]
        per_image = attack.augment_queries and attack.augment is None and pool_augmented is not None
        view = query_view(attack.augment, dataset_view) if attack.augment_queries and not per_image else None
        # read batch by batch: the images are never all in memory at once
        queried = indexed(pool_augmented if per_image else pool, index)
        released_sum = None
        clean = None
        bar = tqdm(total=self.max_queries(attack), desc="query", unit="img", disable=not progress, leave=False)
        for qpass in range(attack.queries_per_image):
            outs, cleans = [], []
            for x in _passes_images(queried, attack.query_batch_size, loader, generator if per_image else None):
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
        return QueryLog(released=(released_sum / attack.queries_per_image).float(),
                        clean=clean, pool_index=index)


def _passes_images(queried: Dataset, batch_size: int, loader: LoaderSettings, generator: torch.Generator | None):
    """The image batches of one pass. With ``generator`` (per-image random transforms) the pass's
    item seeds (dataset/loading.py) come from a seed drawn from it, so each pass gets fresh crops."""
    seed = None
    if generator is not None:
        seed = stream_seed(int(torch.randint(2 ** 62, (1,), generator=generator)), "query-augment")
    for (x,) in read_batches(queried, None, batch_size, settings=loader, seed=seed):
        yield x
