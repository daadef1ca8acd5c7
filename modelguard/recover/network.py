"""D-DAE recovery network: an MLP decoder trained on the simulation table (defenses.md §10.2).

Architecture for K classes: Linear(K→h1), BN, LeakyReLU(0.2), Linear(h1→h2), BN,
LeakyReLU(0.2), Linear(h2→K), BN, LeakyReLU(0.2), softmax. The hidden widths follow the
original's table for K ∈ {10, 43, 100, 200, 256}; the original has no other K (a
KeyError). We generalise to (h1, h2) = (8K, 4K) for every other K
(attacks-and-training.md §12.25).

Training: perturbed → clean pairs from the table, shuffled, loss = K · mean absolute error
= the mean per-sample L1 distance. The optimizer and the per-epoch LR scheduler are
factories, Hydra ``_partial_`` nodes like the victim's and the substitute's recipes
(conf/recover/network.yaml): by default the paper's SGD (lr 0.01, momentum 0.9, weight
decay 1e-4) and StepLR(100, 0.5).

Decoding: the original leaves the network in train mode, so BatchNorm normalises with the
statistics of the decoded batch (the whole transfer set) and updates its running
statistics (§12.6). Our default decodes in eval mode under no_grad, in chunks, so every
row's output depends on that row only; ``train_mode_decode=True`` reproduces the original
(one batch, train-mode BatchNorm, running statistics updated). Both modes decode under
no_grad: the original's missing no_grad costs memory but does not change the output. The
decoded rows come back in ``release_dtype`` of the answers' dtype (float32 for half
precision, as the defenses release them).
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from modelguard.defense.base import release_dtype
from modelguard.recover.base import Recoverer
from modelguard.utils.checks import check_flag, check_number, check_training_knobs
from modelguard.utils.device import resolve_device
from modelguard.utils.seed import make_generator, stream_seed
from modelguard.utils.rows import row_chunks

#: The paper's recovery-network optimizer and LR schedule (the defaults of
#: :class:`RecoveryNetwork` and of conf/recover/network.yaml).
PAPER_OPTIMIZER = functools.partial(torch.optim.SGD, lr=0.01, momentum=0.9, weight_decay=1e-4)
PAPER_SCHEDULER = functools.partial(torch.optim.lr_scheduler.StepLR, step_size=100, gamma=0.5)

HIDDEN_WIDTHS: dict[int, tuple[int, int]] = {
    10: (128, 64),
    43: (512, 256),
    100: (1024, 512),
    200: (2048, 1024),
    256: (2048, 1024),
}


def _probe(optimizer: Callable, scheduler: Callable | None) -> None:
    """Build the optimizer and scheduler on one parameter, so knobs they refuse (a negative lr,
    a zero step) stop the run at construction, not after the queries were paid for."""
    check_training_knobs(getattr(optimizer, "keywords", {}), "recover.optimizer")  # a _partial_ node's knobs
    check_training_knobs(getattr(scheduler, "keywords", {}), "recover.scheduler")
    try:
        built = optimizer(params=[torch.zeros(1, requires_grad=True)])
        if scheduler is not None:
            scheduler(optimizer=built)
    except (TypeError, ValueError, ZeroDivisionError) as err:
        raise ValueError(f"recover.optimizer/recover.scheduler cannot be built ({type(err).__name__}: {err}); "
                         "fix the knob it names, e.g. recover.optimizer.lr=0.01 or recover.scheduler.step_size=100 "
                         "(conf/recover/network.yaml)") from None


def hidden_widths(num_classes: int) -> tuple[int, int]:
    """(h1, h2): the original's table where it has K, else (8K, 4K)."""
    k = int(num_classes)
    return HIDDEN_WIDTHS.get(k, (8 * k, 4 * k))


def build_decoder(num_classes: int) -> nn.Sequential:
    k = int(num_classes)
    h1, h2 = hidden_widths(k)
    return nn.Sequential(
        nn.Linear(k, h1),
        nn.BatchNorm1d(h1),
        nn.LeakyReLU(0.2),
        nn.Linear(h1, h2),
        nn.BatchNorm1d(h2),
        nn.LeakyReLU(0.2),
        nn.Linear(h2, k),
        nn.BatchNorm1d(k),
        nn.LeakyReLU(0.2),
        nn.Softmax(dim=1),
    )


class RecoveryNetwork(Recoverer):
    """D-DAE / D-DAE+ decoder (paper defaults: 200 epochs, batch 1024, SGD lr 0.01,
    momentum 0.9, weight decay 1e-4, StepLR(100, 0.5)).

    ``optimizer`` builds the optimizer from the parameters (``optimizer(params=...)``), and
    ``scheduler`` the LR scheduler from it (``scheduler(optimizer=...)``, stepped once per
    epoch; None: a constant learning rate), like the Hydra ``_partial_`` nodes
    ``recover.optimizer`` and ``recover.scheduler``. ``num_classes`` is inferred from the
    table in ``fit`` when None. ``seed`` fixes the
    initial weights and the shuffling. ``history`` holds one (mean loss, mean batch L2
    distance) pair per epoch of the last ``fit`` (the ``recover_nn_training`` log).

    A trailing training batch of a single row is skipped: train-mode BatchNorm cannot
    normalise one sample (the original would crash there).
    """

    def __init__(
        self,
        num_classes: int | None = None,
        epochs: int = 200,
        batch_size: int = 1024,
        optimizer: Callable[..., torch.optim.Optimizer] = PAPER_OPTIMIZER,
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = PAPER_SCHEDULER,
        train_mode_decode: bool = False,
        seed: int = 0,
        device: str = "cpu",
        progress: bool = True,
    ) -> None:
        self.num_classes = None if num_classes is None else check_number(
            num_classes, "recover.num_classes", low=2, integer=True, note="null: taken from the recovery table",
            fix="set recover.num_classes=null")
        self.epochs = check_number(epochs, "recover.epochs", low=0, integer=True,
                                   fix="set recover.epochs=200 (the paper's value)")
        self.batch_size = check_number(batch_size, "recover.batch_size", low=1, integer=True,
                                       fix="set recover.batch_size=1024 (the paper's value)")
        if not callable(optimizer):
            raise ValueError(f"recover.optimizer={optimizer!r} is invalid: it must build an optimizer from "
                             "the parameters (a _partial_ node); see conf/recover/network.yaml")
        if scheduler is not None and not callable(scheduler):
            raise ValueError(f"recover.scheduler={scheduler!r} is invalid: it must build an LR scheduler "
                             "from the optimizer (a _partial_ node) or be null; see conf/recover/network.yaml")
        _probe(optimizer, scheduler)
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.train_mode_decode = check_flag(train_mode_decode, "recover.train_mode_decode",
                                            fix="set recover.train_mode_decode=false (eval mode, the default) "
                                                "or true (the original's train-mode decoding)")
        self.seed = check_number(seed, "recover.seed", integer=True,
                                 fix="set recover.seed=${seed} (the run's seed)")
        self.device = resolve_device(device)
        self.progress = bool(progress)
        self.net: nn.Sequential | None = None
        self.history: list[tuple[float, float]] = []
        if num_classes is not None:
            self.net = self._fresh_net(int(num_classes))

    def __repr__(self) -> str:
        return (
            f"RecoveryNetwork(num_classes={self.num_classes}, epochs={self.epochs}, "
            f"batch_size={self.batch_size}, optimizer={_describe(self.optimizer)}, "
            f"scheduler={_describe(self.scheduler)}, train_mode_decode={self.train_mode_decode})"
        )

    def _fresh_net(self, k: int) -> nn.Sequential:
        # Initialise under a forked global RNG so the weights depend on ``seed`` only and
        # the caller's RNG stream is left untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(stream_seed(self.seed, "recovery-init"))
            net = build_decoder(k)
        return net.to(self.device)

    def fit(self, clean: torch.Tensor, perturbed: torch.Tensor) -> "RecoveryNetwork":
        if clean.shape != perturbed.shape or clean.dim() != 2:
            raise ValueError(
                f"clean and perturbed must both be [N, K], got {tuple(clean.shape)} and "
                f"{tuple(perturbed.shape)}"
            )
        k = clean.shape[1]
        if self.num_classes is None:
            self.num_classes = k
        elif int(self.num_classes) != k:
            raise ValueError(f"recover.num_classes={self.num_classes} does not match the recovery table, which has "
                             f"{k} classes; set recover.num_classes=null (taken from the table)")
        # Always retrained from scratch (the original never reloads a decoder).
        self.net = self._fresh_net(k)
        net = self.net
        x_all = perturbed.detach().to(self.device, torch.float32)
        y_all = clean.detach().to(self.device, torch.float32)
        n = x_all.shape[0]
        opt = self.optimizer(params=net.parameters())
        sched = self.scheduler(optimizer=opt) if self.scheduler is not None else None
        gen = make_generator(self.seed, "recovery-batches")
        self.history = []
        bar = tqdm(range(self.epochs), desc="recovery net", unit="epoch", disable=not self.progress, leave=False)
        for _ in bar:
            net.train()
            perm = torch.randperm(n, generator=gen).to(self.device)
            loss_sum = l2_sum = 0.0
            steps = 0
            for start in range(0, n, self.batch_size):
                idx = perm[start:start + self.batch_size]
                if idx.numel() < 2:
                    continue
                out = net(x_all[idx])
                target = y_all[idx]
                loss = k * F.l1_loss(out, target)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_sum += float(loss.detach())
                l2_sum += float((out.detach() - target).norm(dim=1).mean())
                steps += 1
            if sched is not None:
                sched.step()
            steps = max(steps, 1)
            self.history.append((loss_sum / steps, l2_sum / steps))
            bar.set_postfix(loss=f"{loss_sum / steps:.4f}")
        bar.close()
        net.eval()
        return self

    def recover(self, released: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
        if self.net is None:
            raise RuntimeError("RecoveryNetwork.recover called before fit")
        x = released.detach().to(self.device, torch.float32)
        with torch.no_grad():
            if self.train_mode_decode:
                self.net.train()
                out = self.net(x)
                self.net.eval()
            else:
                self.net.eval()
                out = torch.cat([self.net(x[a:b]) for a, b in row_chunks(x.shape[0], chunk)])
        # float32 for half-precision answers (release_dtype): rounding the decoder's softmax
        # to float16/bfloat16 would move rows off the simplex by up to 4e-3 and merge classes
        dtype = release_dtype(released.dtype) if released.is_floating_point() else torch.float32
        return out.to(released.device, dtype)

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self.net is None:
            raise RuntimeError("no network yet: call fit first or pass num_classes")
        return self.net.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> "RecoveryNetwork":
        if self.net is None:
            k = state["0.weight"].shape[1]
            self.num_classes = k
            self.net = self._fresh_net(k)
        self.net.load_state_dict(state)
        self.net.eval()
        return self


def _describe(factory) -> str:
    """``SGD(lr=0.01, momentum=0.9, ...)`` for a partial, the repr otherwise."""
    if isinstance(factory, functools.partial):
        args = [repr(a) for a in factory.args] + [f"{k}={v!r}" for k, v in factory.keywords.items()]
        return f"{getattr(factory.func, '__name__', factory.func)}({', '.join(args)})"
    return repr(factory)
