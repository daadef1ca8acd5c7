"""modelguard/engine.py: training and inference loops, selection, losses."""
from __future__ import annotations

import functools

import pytest
import torch
from torch.utils.data import TensorDataset

from modelguard.engine import (BestOnTest, batches, check_selection, default_loss, fit, predict_probs,
                               soft_cross_entropy)
from tests.helpers import pool, tiny_model


def test_batches_cover_every_index_once():
    plain = torch.cat(list(batches(10, 3)))
    assert torch.equal(plain, torch.arange(10))
    shuffled = torch.cat(list(batches(10, 3, torch.Generator().manual_seed(0))))
    assert sorted(shuffled.tolist()) == list(range(10)) and not torch.equal(shuffled, plain)
    assert [len(b) for b in batches(10, 4)] == [4, 4, 2]


def test_soft_cross_entropy_equals_cross_entropy_on_one_hots():
    logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    assert torch.allclose(soft_cross_entropy(logits, torch.nn.functional.one_hot(y, 4).float()),
                          torch.nn.functional.cross_entropy(logits, y))
    model = tiny_model()
    x = pool(6)
    assert torch.allclose(default_loss(model, x, y), torch.nn.functional.cross_entropy(model(x), y))


def test_predict_probs_keeps_the_mode_and_is_batch_independent():
    model = tiny_model()
    model.train()
    x = pool(20)
    probs = predict_probs(model, x, batch_size=7)
    assert model.training and torch.allclose(probs, predict_probs(model, x, batch_size=20))
    assert torch.allclose(probs.sum(1), torch.ones(20))
    assert predict_probs(model, x[:0]).shape == (0, 4)


def test_fit_trains_and_is_deterministic_given_the_generator():
    x, y = pool(64), torch.arange(64) % 4
    runs = []
    for _ in range(2):
        model = tiny_model()
        history = fit(model, TensorDataset(x, y), epochs=3, batch_size=16,
                      optimizer=functools.partial(torch.optim.SGD, lr=0.5),
                      scheduler=functools.partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5),
                      generator=torch.Generator().manual_seed(0), progress=False,
                      evaluate=lambda: {"seen": 1.0})
        runs.append((history, model.state_dict()))
    assert [r["epoch"] for r in runs[0][0]] == [1, 2, 3] and runs[0][0][-1]["seen"] == 1.0
    assert runs[0][0][-1]["loss"] < runs[0][0][0]["loss"]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1].values(), runs[1][1].values()))
    with pytest.raises(ValueError, match="nothing to train on"):
        fit(tiny_model(), TensorDataset(x[:0], y[:0]), epochs=1, batch_size=4, optimizer=torch.optim.SGD,
            generator=torch.Generator(), progress=False)


def test_best_on_test_and_selection_knob():
    model, keeper = tiny_model(), BestOnTest()
    for acc in (0.2, 0.6, 0.6, 0.1):
        keeper.update(model, acc)
    assert (keeper.epoch, keeper.acc) == (3, 0.6) and keeper.state is not None
    assert check_selection("best_test", "victim.select") == "best_test"
    with pytest.raises(ValueError, match="substitute.select='best'"):
        check_selection("best", "substitute.select")


def test_speed_up_keeps_float32_logits_and_the_checkpoint():
    """bf16 autocast (run here on the CPU, where torch supports it) and channels-last layout:
    logits stay float32 and close to the plain model's; the state dict keys and values are unchanged."""
    from modelguard.arch.small import lenet
    torch.manual_seed(0)
    plain = lenet(10, 1, 28, [0.5], [0.25])
    fast = lenet(10, 1, 28, [0.5], [0.25])
    fast.load_state_dict(plain.state_dict())
    fast.speed_up(torch.bfloat16, channels_last=True)
    x = torch.rand(8, 1, 28, 28)
    with torch.no_grad():
        a, b = plain(x), fast(x)
    assert b.dtype == torch.float32 and a.shape == b.shape
    assert torch.allclose(a, b, atol=0.05) and not torch.equal(a, b)  # bf16 rounding, not another model
    assert list(fast.state_dict()) == list(plain.state_dict())
    assert all(torch.equal(fast.state_dict()[k], v) for k, v in plain.state_dict().items())
    assert fast.features(x).dtype == torch.float32  # S4L's rotation head reads features outside autocast
