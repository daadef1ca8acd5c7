"""D-DAE recovery network (defenses.md §10.2, attacks-and-training.md §12.6 and §12.25)."""
from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from modelguard.defense.base import release_dtype
from modelguard.recover.network import RecoveryNetwork, build_decoder, hidden_widths
from tests.realistic_rows import pipeline_params


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The nets here are tiny: one intra-op thread is faster than two, and steadier on
    a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _normalize(x: torch.Tensor) -> torch.Tensor:
    return x / x.sum(dim=1, keepdim=True)


def _sqrt_table(k: int, n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    clean = torch.softmax(2.0 * torch.randn(n, k, generator=g), dim=1)
    return clean, _normalize(clean.sqrt())


EXPECTED = {2: (16, 8), 3: (24, 12), 7: (56, 28), 10: (128, 64), 43: (512, 256), 100: (1024, 512), 256: (2048, 1024)}


@pytest.mark.parametrize("k", sorted(EXPECTED))
def test_shapes_widths_and_simplex(k):
    assert hidden_widths(k) == EXPECTED[k]
    net = build_decoder(k)
    linears = [m for m in net if isinstance(m, nn.Linear)]
    h1, h2 = EXPECTED[k]
    assert [(m.in_features, m.out_features) for m in linears] == [(k, h1), (h1, h2), (h2, k)]
    assert sum(isinstance(m, nn.BatchNorm1d) for m in net) == 3
    rec = RecoveryNetwork(num_classes=k, progress=False)
    x = _normalize(torch.rand(5, k))
    out = rec.recover(x)
    assert out.shape == (5, k)
    assert (out >= 0).all() and torch.allclose(out.sum(1), torch.ones(5), atol=1e-5)


def test_num_classes_inferred_and_checked():
    clean, pert = _sqrt_table(7, 64, 0)
    rec = RecoveryNetwork(epochs=1, batch_size=16, progress=False).fit(clean, pert)
    assert rec.num_classes == 7 and len(rec.history) == 1
    with pytest.raises(ValueError):
        RecoveryNetwork(num_classes=5, epochs=1, progress=False).fit(clean, pert)
    with pytest.raises(RuntimeError):
        RecoveryNetwork(progress=False).recover(pert)


def test_short_fit_reduces_loss():
    clean, pert = _sqrt_table(10, 1024, 1)
    sgd = functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9, weight_decay=1e-4)
    rec = RecoveryNetwork(epochs=12, batch_size=128, optimizer=sgd, progress=False)
    before = (10 * (RecoveryNetwork(num_classes=10, progress=False).recover(pert) - clean).abs().mean()).item()
    rec.fit(clean, pert)
    losses = [h[0] for h in rec.history]
    assert len(rec.history) == 12 and all(len(h) == 2 for h in rec.history)
    assert losses[-1] < 0.6 * losses[0]
    after = (10 * (rec.recover(pert) - clean).abs().mean()).item()
    assert after < 0.6 * before
    # the decoder beats the identity on this invertible perturbation
    identity = (10 * (pert - clean).abs().mean()).item()
    assert after < identity


def test_eval_decode_deterministic_and_batch_independent():
    clean, pert = _sqrt_table(10, 512, 2)
    rec = RecoveryNetwork(epochs=2, batch_size=64, progress=False).fit(clean, pert)
    full = rec.recover(pert[:100])
    again = rec.recover(pert[:100])
    assert torch.equal(full, again)
    alone = torch.cat([rec.recover(pert[i:i + 1]) for i in range(0, 100, 10)])
    assert torch.allclose(alone, full[::10], atol=1e-6)
    mixed = rec.recover(torch.cat([pert[:100], pert[300:500]]))[:100]
    assert torch.allclose(mixed, full, atol=1e-6)
    chunked = rec.recover(pert[:100], chunk=7)
    assert torch.allclose(chunked, full, atol=1e-6)


def test_train_mode_decode_uses_batch_statistics():
    clean, pert = _sqrt_table(10, 512, 3)
    state = RecoveryNetwork(epochs=2, batch_size=64, progress=False).fit(clean, pert).state_dict()
    rec = RecoveryNetwork(num_classes=10, train_mode_decode=True, progress=False).load_state_dict(state)
    a = rec.recover(pert[:100])
    b = rec.recover(torch.cat([pert[:100], pert[300:500]]))[:100]
    assert torch.allclose(a.sum(1), torch.ones(100), atol=1e-5)
    assert not torch.allclose(a, b, atol=1e-4)  # batch composition matters in train mode
    # the original's side effect: running statistics move during decoding
    assert not torch.equal(rec.state_dict()["1.running_mean"], state["1.running_mean"])
    ev = RecoveryNetwork(num_classes=10, progress=False).load_state_dict(state)
    assert not torch.allclose(ev.recover(pert[:100]), a, atol=1e-4)


def test_seeds_reproduce():
    clean, pert = _sqrt_table(7, 300, 4)

    def run(seed):
        rec = RecoveryNetwork(epochs=3, batch_size=64, seed=seed, progress=False).fit(clean, pert)
        return rec.history, rec.recover(pert[:20])

    h1, o1 = run(0)
    h2, o2 = run(0)
    h3, o3 = run(1)
    assert h1 == h2 and torch.equal(o1, o2)
    assert h1 != h3 and not torch.equal(o1, o3)


def test_trailing_single_row_batch_skipped():
    clean, pert = _sqrt_table(3, 65, 5)  # 65 = 2·32 + 1
    rec = RecoveryNetwork(epochs=2, batch_size=32, progress=False).fit(clean, pert)
    assert len(rec.history) == 2


def test_config_recipe_is_the_default_and_bit_identical(compose_cfg):
    # conf/recover/network.yaml's _partial_ optimizer and scheduler are the constructor's
    # defaults, the paper's SGD(0.01, 0.9, 1e-4) and StepLR(100, 0.5): same weights, bit for bit
    from hydra.utils import instantiate

    cfg = compose_cfg("attack=ddae_plus", "recover.epochs=3", "recover.batch_size=64",
                      "recover.scheduler.step_size=2", "recover.progress=false")
    built = instantiate(cfg.recover)
    assert isinstance(built.optimizer, functools.partial) and built.optimizer.func is torch.optim.SGD
    assert built.optimizer.keywords == {"lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4}
    assert built.scheduler.func is torch.optim.lr_scheduler.StepLR
    assert built.scheduler.keywords == {"step_size": 2, "gamma": 0.5}
    clean, pert = _sqrt_table(10, 300, 7)
    built.fit(clean, pert)
    sched = functools.partial(torch.optim.lr_scheduler.StepLR, step_size=2, gamma=0.5)
    plain = RecoveryNetwork(epochs=3, batch_size=64, scheduler=sched, seed=cfg.seed,
                            progress=False).fit(clean, pert)
    assert built.history == plain.history
    for name, value in plain.state_dict().items():
        assert torch.equal(built.state_dict()[name], value), name
    assert "SGD(lr=0.01, momentum=0.9, weight_decay=0.0001)" in repr(plain)


def test_constant_learning_rate_and_argument_errors():
    clean, pert = _sqrt_table(5, 128, 8)
    rec = RecoveryNetwork(epochs=2, batch_size=32, scheduler=None, progress=False).fit(clean, pert)
    assert len(rec.history) == 2
    with pytest.raises(ValueError, match=r"recover.epochs=-1 is invalid: .*set recover.epochs=200"):
        RecoveryNetwork(epochs=-1)
    with pytest.raises(ValueError, match=r"recover.batch_size=0 is invalid"):
        RecoveryNetwork(batch_size=0)
    with pytest.raises(ValueError, match=r"recover.optimizer=0.01 is invalid"):
        RecoveryNetwork(optimizer=0.01)
    with pytest.raises(ValueError, match=r"recover.scheduler='step' is invalid"):
        RecoveryNetwork(scheduler="step")


@pytest.mark.slow
def test_paper_width_k256_fit_runs():
    clean, pert = _sqrt_table(256, 2048, 6)
    rec = RecoveryNetwork(epochs=3, batch_size=256, progress=False).fit(clean, pert)
    assert rec.history[-1][0] < rec.history[0][0]


# ------------------------------------------------ the rows a victim really hands over


@pytest.fixture(scope="module")
def pipeline_decoders(pipeline_rows):
    """One briefly trained decoder per K, on a table around the float32 victim rows."""
    nets = {}
    for k in (10, 100):
        base = pipeline_rows(k, "lenet_test" if k == 10 else f"softmax_f32_K{k}")
        clean = torch.cat([base, base.flip(0)])
        nets[k] = RecoveryNetwork(epochs=2, batch_size=128, progress=False).fit(clean, _normalize(clean.sqrt()))
    return nets


@pytest.mark.parametrize("K,family", pipeline_params(10, 100))
def test_pipeline_rows_decode(K, family, pipeline_rows, pipeline_decoders):
    rec = pipeline_decoders[K]
    released = pipeline_rows(K, family)
    out = rec.recover(released)
    assert out.dtype == release_dtype(released.dtype)  # float32 for half precision
    assert out.shape == released.shape and not torch.isnan(out).any()
    assert (out >= 0).all() and torch.allclose(out.double().sum(1), torch.ones(len(out), dtype=torch.float64), atol=1e-5)
    # the decoder sees the same float32 values either way: half-precision answers decode
    # exactly as their float32 values do
    assert torch.equal(out, rec.recover(released.float()).to(out.dtype))
    # eval decode: every row on its own (chunks of 1 row) as in the batch
    assert torch.allclose(rec.recover(released[:8], chunk=1), out[:8], atol=1e-6)
