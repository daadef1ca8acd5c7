"""KnockoffNets' random policy (spec attacks §8.1) on a tiny victim."""
from __future__ import annotations

import torch

from modelguard.attack.strategy import AttackStrategy
from modelguard.dataset.transforms import ShiftView
from modelguard.defense.top1 import Top1
from modelguard.policy.knockoff import KnockoffRandom
from tests.helpers import pool, tiny_api


def test_knockoff_queries_a_seeded_permutation_within_budget():
    api = tiny_api(budget=40)
    log = KnockoffRandom().collect(api, pool(), AttackStrategy(budget=40, query_batch_size=7),
                                   torch.Generator().manual_seed(3), progress=False)
    assert api.queries == 40 and len(log.released) == 40
    assert len(set(log.pool_index.tolist())) == 40
    again = KnockoffRandom().collect(tiny_api(budget=40), pool(), AttackStrategy(budget=40, query_batch_size=5),
                                     torch.Generator().manual_seed(3), progress=False)
    assert torch.equal(log.pool_index, again.pool_index)
    assert torch.allclose(log.released, again.released)  # batch size does not change answers


def test_smoothing_averages_three_augmented_passes():
    api = tiny_api(budget=60, defense=Top1())
    attack = AttackStrategy(budget=20, queries_per_image=3, augment_queries=True, augment=ShiftView())
    log = KnockoffRandom().collect(api, pool(), attack, torch.Generator().manual_seed(0), progress=False)
    assert api.queries == 60
    assert torch.allclose(log.released.sum(1), torch.ones(20))
    # averages of three one-hot answers take values in {0, 1/3, 2/3, 1}
    assert torch.allclose(log.released * 3, (log.released * 3).round(), atol=1e-5)



class _Counting(torch.utils.data.Dataset):
    """A dataset that counts the items read from it."""

    def __init__(self, dataset):
        self.dataset, self.reads = dataset, 0

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        self.reads += 1
        return self.dataset[i]


class _RecordingAPI:
    """Answers uniform rows and keeps every queried batch."""

    def __init__(self, k):
        self.k, self.batches = k, []

    def query(self, x, return_clean=False):
        self.batches.append(x.clone())
        rows = torch.full((len(x), self.k), 1.0 / self.k)
        return rows, rows


def test_smoothing_on_disk_queries_the_per_image_augmented_pool(compose_cfg, tmp_path):
    """A pool on disk (the imagenet family at 224 px): smoothing's passes read pool_augmented, the
    pool under its per-image train transform (RandomResizedCrop, flip), afresh on every pass and
    reproducibly; attack.augment, when set, still wins. The query stage hands it over."""
    from hydra.utils import instantiate
    from modelguard.stages.query import policy_inputs
    from tests.dataset.test_ondisk import imagenet_triple
    imagenet_triple(tmp_path)
    cfg = compose_cfg("dataset=caltech256", f"paths.data_dir={tmp_path}", "attack=smoothing")
    data = instantiate(cfg.dataset).load()
    attack = AttackStrategy(budget=4, queries_per_image=3, query_batch_size=2, augment_queries=True)
    inputs = policy_inputs(cfg, data, attack, KnockoffRandom(), api=None)
    assert inputs["pool_augmented"] is data.pool_augmented

    def run(augment=None):
        pool, augmented = _Counting(data.query_pool), _Counting(data.pool_augmented)
        api = _RecordingAPI(data.num_classes)
        smoothing = AttackStrategy(budget=4, queries_per_image=3, query_batch_size=2, augment_queries=True,
                                   augment=augment)
        log = KnockoffRandom().collect(api, pool, smoothing, torch.Generator().manual_seed(0), progress=False,
                                       dataset_view=data.pool_train_view, pool_augmented=augmented)
        return log, torch.cat(api.batches), pool.reads, augmented.reads

    log, queried, pool_reads, augmented_reads = run()
    assert (pool_reads, augmented_reads) == (0, 12)  # 4 images x 3 passes, all from the augmented pool
    assert queried.shape == (12, 3, 224, 224)
    passes = queried.view(3, 4, 3, 224, 224)
    assert not torch.equal(passes[0], passes[1]) and not torch.equal(passes[1], passes[2])  # fresh crops
    plain = torch.stack([data.query_pool[int(i)][0] for i in log.pool_index])
    assert not torch.equal(passes[0], plain)  # not the test view (Resize 256, CenterCrop 224)
    again = run()
    assert torch.equal(again[1], queried) and torch.equal(again[0].pool_index, log.pool_index)
    _, shifted, pool_reads, augmented_reads = run(augment=ShiftView())
    assert augmented_reads == 0 and pool_reads == 12  # attack.augment names the view: the plain pool, shifted
