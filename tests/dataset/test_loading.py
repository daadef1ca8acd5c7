"""The streaming data path (modelguard.dataset.loading): datasets read item by item, as from
disk, give the pipeline exactly what the in-memory path gives, and the query and substitute
stages never hold the query pool in memory."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from modelguard.dataset.loading import (CyclicBatches, IndexBatches, LoaderSettings, batch_sizes, labels_of,
                                        read_batches, take, transfer_images)
from modelguard.run import run_experiment
from tests.fakes import ItemByItem

REPO = Path(__file__).resolve().parents[2]


def memory_data(n: int = 50) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.rand(n, 1, 4, 4, generator=g), torch.randint(3, (n,), generator=g))


@pytest.mark.parametrize("workers", [0, 2])
def test_item_by_item_reads_the_same_batches_as_memory(workers):
    data = memory_data()
    settings = LoaderSettings(num_workers=workers)
    for generator_seed in (None, 5):
        def batches(ds):
            g = None if generator_seed is None else torch.Generator().manual_seed(generator_seed)
            return [tuple(t.clone() for t in b) for b in read_batches(ds, None, 8, g, settings)]

        a, b = batches(data), batches(ItemByItem(data))
        assert len(a) == len(b) == 7
        for (xa, ya), (xb, yb) in zip(a, b):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    index = torch.tensor([7, 3, 3, 40])
    assert torch.equal(take(ItemByItem(data), index, settings), data.tensors[0][index])
    assert torch.equal(labels_of(ItemByItem(data)), labels_of(data))


def test_batches_of_a_seeded_epoch_are_a_permutation_and_change_each_epoch():
    sampler = IndexBatches(10, 4, torch.Generator().manual_seed(0))
    first, second = torch.cat(list(sampler)), torch.cat(list(sampler))
    assert sorted(first.tolist()) == list(range(10)) and not torch.equal(first, second)
    assert [len(b) for b in sampler] == batch_sizes(10, 4) == [4, 4, 2]


def test_cyclic_batches_continue_across_iterations():
    cyclic = CyclicBatches(5, [2, 2])
    assert [b.tolist() for b in cyclic] == [[0, 1], [2, 3]]
    assert [b.tolist() for b in cyclic] == [[4, 0], [1, 2]]


def test_transfer_images_put_synthetic_images_where_the_index_is_negative():
    pool = memory_data(10)
    index = torch.tensor([3, -1, 5, -1])
    synthetic = torch.full((2, 1, 4, 4), 7.0)
    labels = torch.eye(4)
    lazy = transfer_images(ItemByItem(pool), index, synthetic, labels)
    eager = transfer_images(pool, index, synthetic, labels)
    assert isinstance(eager, TensorDataset) and len(lazy) == len(eager) == 4
    for i in range(4):
        assert torch.equal(lazy[i][0], eager[i][0]) and torch.equal(lazy[i][1], eager[i][1])
    assert torch.equal(eager.tensors[0][1], synthetic[0]) and torch.equal(eager.tensors[0][2], pool.tensors[0][5])


def test_loader_settings_are_validated():
    with pytest.raises(ValueError, match="loader.num_workers=-1 is invalid"):
        LoaderSettings(num_workers=-1)
    with pytest.raises(ValueError, match="loader.pin_memory='yes' is invalid"):
        LoaderSettings(pin_memory="yes")


def _metrics(record: dict) -> dict:
    return {k: v for k, v in record.items() if not k.startswith("time/") and not k.endswith("_build_s")}


@pytest.mark.parametrize("overrides", [(), ("attack=ddae", "attack.table_source.count=2"), ("policy=jbtr3", "policy.seed_size=64")],
                         ids=["naive", "ddae", "jbtr3"])
def test_the_pipeline_gives_the_same_metrics_item_by_item(smoke, tmp_path, overrides):
    """The DataLoader path (every role read item by item) against the in-memory path, end to end."""
    memory = run_experiment(smoke(*overrides, output_dir=tmp_path / "memory"))
    lazy = run_experiment(smoke(*overrides, "dataset._target_=tests.fakes.LazySynthetic", output_dir=tmp_path / "lazy"))
    assert _metrics(memory) == _metrics(lazy)


PEAK_SCRIPT = """
import json, resource, sys, torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict
from modelguard.run import run_experiment
torch.set_num_threads(1)
conf, out, cache, stages, pool_size = sys.argv[1:6]
with initialize_config_dir(version_base="1.3", config_dir=conf):
    cfg = compose(config_name="main", overrides=["experiment=smoke", "dataset._target_=tests.fakes.ProceduralData",
        "dataset.in_channels=3", "dataset.image_size=64", f"dataset.pool_size={pool_size}", "attack.budget=256",
        f"stages=[{stages}]", "defense=top1"])
with open_dict(cfg):
    cfg.paths.output_dir, cfg.paths.cache_dir = out, cache
run_experiment(cfg)
print(json.dumps({"peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def _peak_kib(tmp_path: Path, pool_size: int) -> int:
    def run(stages: str) -> dict:
        done = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(REPO / "conf"), str(tmp_path / f"run{pool_size}"),
                               str(tmp_path / f"cache{pool_size}"), stages, str(pool_size)],
                              cwd=REPO, capture_output=True, text=True, timeout=300,
                              env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    run("victim")  # trained and cached in its own process: the measured one runs query and substitute only
    return run("query,substitute")["peak_kib"]


def test_query_and_substitute_memory_does_not_grow_with_the_pool(tmp_path):
    """A pool of 20,000 images of 3x64x64 (940 MiB as float32 tensors) against one of 5,000: the
    peak memory of the query and substitute stages stays within 1.3x."""
    small, large = _peak_kib(tmp_path, 5_000), _peak_kib(tmp_path, 20_000)
    assert large <= 1.3 * small, f"peak {large} KiB with 20,000 pool images vs {small} KiB with 5,000"


class _NoisyItems(torch.utils.data.Dataset):
    """Items with a random train transform drawn from the global RNG (as torchvision's are)."""

    def __len__(self) -> int:
        return 12

    def __getitem__(self, i: int):
        return torch.rand(1) + i, i


@pytest.mark.parametrize("workers", [0, 2])
def test_random_transforms_are_reproducible(workers):
    """Same global seed, same sampler stream: the same random views, with or without workers."""
    settings = LoaderSettings(num_workers=workers)

    def epoch():
        reader = read_batches(_NoisyItems(), None, 4, torch.Generator().manual_seed(3), settings)
        return torch.cat([x for x, _ in reader])

    torch.manual_seed(0)
    first = epoch()
    torch.manual_seed(0)
    assert torch.equal(first, epoch())


def test_workers_draw_from_the_loader_generator_not_the_global_rng():
    reader = read_batches(_NoisyItems(), None, 4, torch.Generator().manual_seed(3), LoaderSettings(num_workers=2))
    torch.manual_seed(0)
    expected_next = torch.rand(1)
    torch.manual_seed(0)
    views = torch.cat([x for x, _ in reader])
    assert torch.equal(torch.rand(1), expected_next)  # the epoch took nothing from the global RNG
    other = read_batches(_NoisyItems(), None, 4, torch.Generator().manual_seed(4), LoaderSettings(num_workers=2))
    assert not torch.equal(torch.cat([x for x, _ in other]).sort().values, views.sort().values)


def _two_epochs(settings: LoaderSettings, global_seed: int = 0) -> list[torch.Tensor]:
    """The views of two epochs of one reader (the way ``engine.fit`` reads), by item index."""
    torch.manual_seed(global_seed)
    reader = read_batches(_NoisyItems(), None, 5, torch.Generator().manual_seed(3), settings)
    epochs = []
    for _ in range(2):
        x, i = (torch.cat(parts) for parts in zip(*reader))
        epochs.append(x[i.argsort()])
    return epochs


def test_random_views_do_not_depend_on_the_loader_settings():
    """Per-item seeds from the main process: 0, 1 or 2 workers, persistent or not, pinned or not,
    and any global RNG state give each item the same view in each epoch, a new one the next epoch."""
    reference = _two_epochs(LoaderSettings())
    assert not torch.equal(reference[0], reference[1])
    for settings in (LoaderSettings(num_workers=1),
                     LoaderSettings(num_workers=2, persistent_workers=True),
                     LoaderSettings(num_workers=2, pin_memory=True)):
        got = _two_epochs(settings, global_seed=123)
        assert all(torch.equal(a, b) for a, b in zip(got, reference)), settings


def test_reading_in_process_leaves_the_global_rng_alone():
    """Decoding in the main process (0 workers) must not move the RNG that initialisation and
    dropout draw from: otherwise the results would depend on loader.num_workers."""
    torch.manual_seed(0)
    expected_next = torch.rand(1)
    torch.manual_seed(0)
    views = torch.cat([x for x, _ in read_batches(_NoisyItems(), None, 4, torch.Generator().manual_seed(3))])
    assert torch.equal(torch.rand(1), expected_next)
    assert len(views.unique()) == 12
