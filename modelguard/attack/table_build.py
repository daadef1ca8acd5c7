"""Building the attacker's recovery table (spec defenses §9): clean samples, then their images
under the defended API's offline form (its simulation, with the defender's side information
per input and the quantizer's live codebook, as in the paper's strong adaptive attacker)."""
from __future__ import annotations

import time
from typing import Any

import torch
from omegaconf import DictConfig

from modelguard.attack.shadows import shadow_outputs, train_shadows
from modelguard.quantize.none import NoQuantizer
from modelguard.recover.table import dirichlet_table_clean, epsilon_filter, simulate_table
from modelguard.stages.common import device_of
from modelguard.utils.seed import make_generator


def side_information(api, inputs: torch.Tensor, batch_size: int = 512) -> torch.Tensor | None:
    if not api.defense.requires_xinfo:
        return None
    return torch.cat([api.xinfo(inputs[i:i + batch_size]).cpu() for i in range(0, len(inputs), batch_size)])


def build_recovery_table(cfg: DictConfig, data, api, attack, log) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    start = time.perf_counter()
    size = attack.table_rows_per_query * len(log.released)
    generator = make_generator(cfg.seed, f"recovery-table-{len(log.released)}")
    if attack.table_source == "dirichlet":
        clean, index = dirichlet_table_clean(log.clean, size, attack.concentration_factor, generator)
    elif attack.table_source == "shadows":
        models = train_shadows(cfg, data, attack.shadow_count, attack.shadow_epochs, attack.shadow_split)
        clean, index = shadow_outputs(models, log.inputs, device_of(cfg))
        if len(clean) > size:
            keep = torch.randperm(len(clean), generator=generator)[:size]
            clean, index = clean[keep], index[keep]
    else:
        raise ValueError(f"{cfg.recover._target_.rsplit('.', 1)[-1]} (the recover option) needs a recovery "
                         f"table, but attack.table_source={attack.table_source}; choose attack=bayes, ddae or "
                         "ddae_plus, or set attack.table_source=dirichlet")
    xinfo = side_information(api, log.inputs)
    perturbed = simulate_table(clean.to(torch.float32), api.simulate, index=index, xinfo=xinfo,
                               progress=bool(cfg.progress))
    if not isinstance(api.quantizer, NoQuantizer) and hasattr(api.quantizer, "eps"):
        clean, perturbed = epsilon_filter(clean, perturbed, float(api.quantizer.eps))
    # Rows per query: the paper has 20 (1e6 rows for 5e4 queries; with D-DAE, 20 shadows x 1 row
    # each); with shadows it is at most attack.shadow_count, and the ModelGuard-S eps filter
    # drops rows.
    metrics = {"recover/table_rows": len(clean),
               "recover/table_rows_per_query": round(len(clean) / max(len(log.released), 1), 4),
               "recover/table_build_s": round(time.perf_counter() - start, 3)}
    return clean.float(), perturbed.float(), metrics
