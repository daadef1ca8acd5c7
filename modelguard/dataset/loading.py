"""Reading images by index, in batches, from any dataset: the one data path of every stage.

Every role of ``ExperimentData`` (victim train/test, query pool, outliers) is a map-style
``torch.utils.data.Dataset`` whose items start with a pixel-space image ``[C, H, W]`` (then its
label). Two kinds exist:

- **in memory**: a ``TensorDataset`` (the embedded and synthetic options). Batches are read by
  indexing its tensors directly, with no DataLoader and no per-item calls, so the embedded
  pipeline computes exactly what it did before datasets could live on disk.
- **on disk** (or anything else): batches go through a ``torch.utils.data.DataLoader`` with the
  run's ``LoaderSettings`` (workers, pinned memory, persistent workers), so only the batches in
  flight are in memory, whatever the size of the dataset.

Which images a batch holds is always decided here, by ``IndexBatches`` (a seeded order, or a
given list of indices), never by the DataLoader: the two kinds read the same images in the same
order for the same seed. Labels are read without decoding images (``labels_of``).

The random train transforms of datasets on disk (crops, flips) draw from a seed of their own per
item, handed out with the batch in the main process (``_SeededItems``), not from a worker's RNG or
the global one: the images a run sees are the same with any ``loader.num_workers``,
``persistent_workers`` or ``pin_memory``, and decoding never moves the global RNG that model
initialisation and dropout use (docs/determinism.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from modelguard.utils.checks import check_number


@dataclass(frozen=True)
class LoaderSettings:
    """How disk-backed datasets are read (``loader.*`` in conf/main.yaml); in-memory ones ignore it.

    ``num_workers`` processes decode images in parallel; ``pin_memory`` speeds host-to-GPU
    copies; ``persistent_workers`` keeps the workers alive between epochs."""

    num_workers: int = 0
    pin_memory: bool = False
    persistent_workers: bool = False

    def __post_init__(self) -> None:
        check_number(self.num_workers, "loader.num_workers", integer=True, low=0,
                     note="0 reads in the main process", fix="set loader.num_workers=0, or the CPU cores to spare")
        for knob in ("pin_memory", "persistent_workers"):
            if not isinstance(getattr(self, knob), bool):
                raise ValueError(f"loader.{knob}={getattr(self, knob)!r} is invalid: it must be true or false; "
                                 f"set loader.{knob}=false")


IN_PROCESS = LoaderSettings()


class IndexBatches:
    """Batches of indices: ``index`` (an int ``n`` for ``range(n)``, or a 1-D index tensor) cut into
    slices of ``batch_size``, in a fresh ``generator`` permutation on every iteration when one is
    given (a training epoch), in order otherwise. Usable as a DataLoader ``batch_sampler``."""

    def __init__(self, index: int | torch.Tensor, batch_size: int, generator: torch.Generator | None = None):
        self.index = torch.arange(index) if isinstance(index, int) else index.reshape(-1).long()
        self.batch_size = max(int(batch_size), 1)
        self.generator = generator

    def __len__(self) -> int:
        return -(-len(self.index) // self.batch_size)

    def __iter__(self) -> Iterator[torch.Tensor]:
        index = self.index
        if self.generator is not None:
            index = index[torch.randperm(len(index), generator=self.generator)]
        for start in range(0, len(index), self.batch_size):
            yield index[start:start + self.batch_size]


class CyclicBatches:
    """Consecutive batches cycling through ``range(n)``: one iteration yields a batch of each size
    in ``sizes``, and the next iteration continues where it stopped (the victim's outlier batches,
    one per training batch, in a fixed cycling order)."""

    def __init__(self, n: int, sizes: Sequence[int]):
        self.n, self.sizes, self.cursor = n, list(sizes), 0

    def __len__(self) -> int:
        return len(self.sizes)

    def __iter__(self) -> Iterator[torch.Tensor]:
        for size in self.sizes:
            batch = (self.cursor + torch.arange(size)) % self.n
            self.cursor = (self.cursor + size) % self.n
            yield batch


def batch_sizes(n: int, batch_size: int) -> list[int]:
    """The sizes of the batches ``IndexBatches(n, batch_size)`` yields."""
    return [min(batch_size, n - start) for start in range(0, n, batch_size)]


class _SeededBatches:
    """An ``IndexBatches`` handing the DataLoader lists of ``(index, item seed)``: the seeds come
    from ``generator``, which runs on across iterations (epochs) in the main process, so they do
    not depend on the workers (their number, or whether they persist)."""

    def __init__(self, batches: Iterable[torch.Tensor], generator: torch.Generator):
        self.batches = batches
        self.generator = generator

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for batch in self.batches:
            seeds = torch.randint(2 ** 62, (len(batch),), generator=self.generator)
            yield list(zip(batch.tolist(), seeds.tolist()))


class _SeededItems(Dataset):
    """``dataset[index]`` computed under torch's RNG seeded with the item's seed, and the caller's
    RNG state restored afterwards: an item's random transform depends on its seed only."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


class BatchReader:
    """Iterable over the batches of ``dataset`` that ``batches`` names: tuples of stacked tensors
    (images, then labels if the dataset has them). Iterate it once per epoch; with persistent
    workers the same workers serve every epoch."""

    def __init__(self, dataset: Dataset, batches: Iterable[torch.Tensor], settings: LoaderSettings = IN_PROCESS,
                 seed: int | None = None):
        self.dataset = dataset
        self.batches = batches
        self.loader = None
        if not isinstance(dataset, TensorDataset):
            workers = settings.num_workers
            # Item seeds (the random train transforms) come from ``seed``, or the sampler's stream,
            # without drawing from it or from the global RNG; the loader's generator is seeded too, so
            # that creating workers draws nothing from the global RNG either.
            sampler_gen = getattr(batches, "generator", None)
            if seed is None:
                seed = sampler_gen.initial_seed() if sampler_gen is not None else 0
            item_seeds = torch.Generator().manual_seed(seed)
            self.loader = DataLoader(_SeededItems(dataset), batch_sampler=_SeededBatches(batches, item_seeds),
                                     num_workers=workers, pin_memory=settings.pin_memory and torch.cuda.is_available(),
                                     persistent_workers=settings.persistent_workers and workers > 0,
                                     generator=torch.Generator().manual_seed(seed))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        if self.loader is None:
            tensors = self.dataset.tensors
            return (tuple(t[idx] for t in tensors) for idx in self.batches)
        return (tuple(batch) if isinstance(batch, (list, tuple)) else (batch,) for batch in self.loader)


def as_dataset(inputs: torch.Tensor | Dataset) -> Dataset:
    """A dataset of ``inputs``: a tensor of images becomes an in-memory ``TensorDataset``."""
    return TensorDataset(inputs) if isinstance(inputs, torch.Tensor) else inputs


def read_batches(dataset: Dataset, index: int | torch.Tensor | None = None, batch_size: int = 512,
                 generator: torch.Generator | None = None,
                 settings: LoaderSettings = IN_PROCESS, seed: int | None = None) -> BatchReader:
    """``BatchReader`` over ``index`` (default: the whole dataset) in batches of ``batch_size``;
    ``seed``: the seed of the items' random transforms, default ``generator``'s."""
    return BatchReader(dataset, IndexBatches(len(dataset) if index is None else index, batch_size, generator),
                       settings, seed)


def take(dataset: Dataset, index: torch.Tensor | Sequence[int], settings: LoaderSettings = IN_PROCESS) -> torch.Tensor:
    """The images at ``index``, stacked in memory: for small sets only (a handful of images, a
    seed set), never for a whole pool."""
    index = torch.as_tensor(index, dtype=torch.long)
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[0][index]
    parts = [batch[0] for batch in read_batches(dataset, index, 256, settings=settings)]
    return torch.cat(parts) if parts else torch.empty(0)


def labels_of(dataset: Dataset) -> torch.Tensor:
    """The dataset's labels, without decoding any image: a ``TensorDataset``'s second tensor, or
    the ``targets`` every disk-backed dataset exposes."""
    if isinstance(dataset, TensorDataset):
        if len(dataset.tensors) < 2:
            raise ValueError("this in-memory dataset holds images only; it has no labels")
        return dataset.tensors[1]
    targets = getattr(dataset, "targets", None)
    if targets is None:
        raise TypeError(f"{type(dataset).__name__} exposes no `targets`: a dataset role with labels must "
                        "list them (one int per item) so that they are read without decoding images")
    return torch.as_tensor(targets, dtype=torch.long)


class Indexed(Dataset):
    """Items ``index`` of ``dataset`` (images only), relabelled with ``labels`` when given: the
    images an attacker queried, a shadow model's share of the pool. Stays an in-memory
    ``TensorDataset`` when ``dataset`` is one (see ``indexed``)."""

    def __init__(self, dataset: Dataset, index: torch.Tensor, labels: torch.Tensor | None = None):
        self.dataset = dataset
        self.index = index.reshape(-1).long()
        self.labels = labels
        if labels is not None:
            self.targets = labels

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int):
        image = self.dataset[int(self.index[i])][0]
        return image if self.labels is None else (image, self.labels[i])


def indexed(dataset: Dataset, index: torch.Tensor, labels: torch.Tensor | None = None) -> Dataset:
    """Items ``index`` of ``dataset`` with optional new labels: a ``TensorDataset`` of the selected
    rows for an in-memory dataset (what the pipeline did before), a lazy ``Indexed`` view otherwise."""
    if isinstance(dataset, TensorDataset):
        images = dataset.tensors[0][index.reshape(-1).long()]
        return TensorDataset(images) if labels is None else TensorDataset(images, labels)
    return Indexed(dataset, index, labels)


class TransferImages(Dataset):
    """The transfer set as the substitute reads it: item ``i`` is pool image ``pool_index[i]``, or
    for ``pool_index[i] < 0`` the next of the ``synthetic`` images held in memory (JBDA-TR's), with
    label ``labels[i]``."""

    def __init__(self, pool: Dataset, pool_index: torch.Tensor, synthetic: torch.Tensor | None,
                 labels: torch.Tensor):
        self.pool, self.pool_index, self.synthetic, self.labels = pool, pool_index.long(), synthetic, labels
        self.slot = torch.cumsum(self.pool_index < 0, 0) - 1  # position among the synthetic images
        self.targets = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        j = int(self.pool_index[i])
        image = self.pool[j][0] if j >= 0 else self.synthetic[int(self.slot[i])]
        return image, self.labels[i]


def transfer_images(pool: Dataset, pool_index: torch.Tensor, synthetic: torch.Tensor | None,
                    labels: torch.Tensor) -> Dataset:
    """``TransferImages``, or for an in-memory pool a ``TensorDataset`` of the same images (what
    the pipeline did before)."""
    if not isinstance(pool, TensorDataset):
        return TransferImages(pool, pool_index, synthetic, labels)
    images = pool.tensors[0]
    inputs = torch.empty((len(pool_index), *images.shape[1:]), dtype=images.dtype)
    inputs[pool_index >= 0] = images[pool_index[pool_index >= 0]]
    if (pool_index < 0).any():
        inputs[pool_index < 0] = synthetic.to(images.dtype)
    return TensorDataset(inputs, labels)
