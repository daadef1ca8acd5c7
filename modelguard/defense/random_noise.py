"""Random noise in logit space, projected onto an L1 or L2 ball (spec §3; legacy, not in the grid)."""
from __future__ import annotations

import torch

from modelguard.defense.base import Defense, check_probs, release_dtype
from modelguard.utils.checks import check_number
from modelguard.utils.seed import make_generator



def project_l1_ball(v: torch.Tensor, radius: float) -> torch.Tensor:
    """Euclidean projection of every row of ``v`` onto the L1 ball of ``radius`` (Duchi et al.).

    Rows already inside the ball are returned unchanged. For the others, with ``u`` the
    sorted magnitudes (descending) and ``S_k`` their cumulative sums, ``ρ`` is the largest
    k with ``u_k·k > S_k − radius``, ``θ = (S_ρ − radius)/ρ`` and the result is
    ``sign(v)·max(|v| − θ, 0)`` (spec §3). Batched over rows, no Python loop.
    """
    if v.dim() != 2:
        raise ValueError(f"project_l1_ball takes a [rows, dim] tensor, got shape {tuple(v.shape)}")
    mag = v.abs()
    inside = mag.sum(dim=1, keepdim=True) <= radius
    u = torch.sort(mag, dim=1, descending=True).values
    css = u.cumsum(dim=1)
    k = torch.arange(1, v.shape[1] + 1, device=v.device, dtype=v.dtype)
    cond = u * k > css - radius  # true for a prefix of k (k = 1 always holds outside the ball)
    rho = cond.to(torch.int64).cumsum(dim=1).argmax(dim=1, keepdim=True)  # last true index
    theta = (css.gather(1, rho) - radius) / (rho + 1).to(v.dtype)
    proj = torch.sign(v) * (mag - theta).clamp_min(0.0)
    return torch.where(inside, v, proj)


class RandomNoise(Defense):
    """Add bounded random noise to the logits of y, then map back to the simplex.

    Per row (spec §3): ``z = logit(y)``; draw ``δ`` uniform on ``[0, 2ε/K^{1/p}]^K`` (p = 1
    or 2, so that the mean has p-norm ε) or standard normal; project ``δ`` onto the Lp ball
    of radius ε (Duchi's L1 projection, or ``δ·ε/max(‖δ‖₂, ε)``); release
    ``σ(z + δ)`` renormalised. Classes at exactly 0 or 1 stay there (logit ±∞).
    Computed in float64, released in ``release_dtype`` (float32 for half precision).

    Randomness: two ``torch.Generator``s on the CPU, both derived from ``seed``. ``perturb``
    draws from one (the defended API's stream), ``simulate`` from the other, so an
    attacker simulating the defense offline gets *fresh* noise from the same distribution
    and never replays the API's exact draws (the original had no ``get_yprime`` and
    simulated this defense as the identity, spec §3). Drawing on the CPU makes the noise
    identical on every device for a given seed. Two instances built with the same seed
    give the same sequence of answers.

    ``top1_preserve`` is False: the noise can reorder classes.
    """

    requires_xinfo = False
    top1_preserve = False

    def __init__(self, eps: float = 1.0, norm: str = "l1", strategy: str = "uniform", seed: int = 0):
        eps = check_number(eps, "defense.eps", low=0, low_open=True,
                           note="the radius of the noise ball in logit space", fix="set defense.eps=1.0")
        if norm not in ("l1", "l2"):
            raise ValueError(
                f"defense.norm={norm!r} is invalid: norm must be one of 'l1', 'l2'; set defense.norm=l1"
            )
        if strategy not in ("uniform", "gaussian"):
            raise ValueError(
                f"defense.strategy={strategy!r} is invalid: strategy must be one of 'uniform', "
                "'gaussian'; set defense.strategy=uniform"
            )
        seed = check_number(seed, "defense.seed", integer=True, fix="set defense.seed=0")
        self.eps = eps
        self.norm = norm
        self.strategy = strategy
        self.seed = seed
        self._gen = make_generator(seed, "random-noise")
        self._sim_gen = make_generator(seed, "random-noise-simulate")

    def _noise(self, shape: tuple[int, int], gen: torch.Generator) -> torch.Tensor:
        rows, k = shape
        if self.strategy == "uniform":
            p = 1.0 if self.norm == "l1" else 2.0
            delta = torch.rand(rows, k, generator=gen, dtype=torch.float64) * (2.0 * self.eps / k ** (1.0 / p))
        else:
            delta = torch.randn(rows, k, generator=gen, dtype=torch.float64)
        if self.norm == "l1":
            return project_l1_ball(delta, self.eps)
        scale = self.eps / delta.norm(dim=1, keepdim=True).clamp_min(self.eps)
        return delta * scale

    def _apply(self, probs: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        check_probs(probs)
        p = probs.to(torch.float64).clamp(0.0, 1.0)
        z = torch.log(p) - torch.log1p(-p)  # ±inf at 0 and 1 is intended
        delta = self._noise(tuple(probs.shape), gen).to(p.device)
        ytil = torch.sigmoid(z + delta)
        out = ytil / ytil.sum(dim=1, keepdim=True)
        return out.to(release_dtype(probs.dtype))

    def perturb(self, probs: torch.Tensor, xinfo: torch.Tensor | None = None) -> torch.Tensor:
        return self._apply(probs, self._gen)

    def simulate(self, probs: torch.Tensor, xinfo: torch.Tensor | None = None) -> torch.Tensor:
        return self._apply(probs, self._sim_gen)

    def extra_repr(self) -> str:
        return f"eps={self.eps}, norm={self.norm!r}, strategy={self.strategy!r}, seed={self.seed}"
