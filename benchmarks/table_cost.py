"""What one paper table asks of the accelerator, and (given measured throughputs) how long it takes.

    python benchmarks/table_cost.py                                  # images per table (all four)
    python benchmarks/table_cost.py --throughput gpu.json            # + hours, from gpu_smoke.py's figures
    python benchmarks/table_cost.py cifar10 --jobs                   # the count of every job of one table

The jobs are the launcher's own: ``DRY_RUN=1 bash launchers/paper_table.sh <dataset>`` lists them
(skip rules included), and each job's knobs come from composing its overrides with the project's
configs (epochs, batch of queries, budget, JBDA-TR's rounds, S4L's rotation loss, smoothing's
passes, shadows). So the figures follow the presets when they change. Dataset sizes are the
official split sizes (docs/datasets.md), since no data needs to be on disk.

Images counted, per model family (a training image = one forward and backward pass, an inference
image = one forward pass under no_grad):
- victim stage, once per seed: victim.epochs x N_train for the victim, as many outlier images
  (one outlier batch of the same size per training batch) and, with the misinformation model,
  as many again; a test pass of the victim per epoch, one of the misinformation model;
- per job: the defended victim on the test set (utility) and once more for fidelity; its answers
  to ``budget x queries_per_image`` queries, times two for AM (its misinformation model answers
  too) and for MAD (its proxy's posterior);
- per job, the substitute: epochs x transfer-set size training images, five times that with
  S4L's rotation loss (four rotated views of a pool batch per batch), and a test pass per epoch;
- JBDA-TR: a substitute per round on the images collected so far (1,000, 4,000, 16,000), with its
  test passes, and ``steps`` PGD steps (one forward and backward each) per synthetic image;
- D-DAE: the shadows, once per seed (shared by every D-DAE job): ``shadow_epochs`` x the pool's
  train images of K of its classes, a test pass per epoch; per job the shadows' answers on the
  queries (``table_source.count`` shadows x budget, AlexNet inference).
Not counted: the recovery network (200 epochs over up to 1e6 rows of K numbers, tiny next to the
images), the defenses' own arithmetic (ModelGuard-W, ModelGuard-S: ``benchmarks/``), data loading.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from hydra import compose, initialize_config_dir

REPO = Path(__file__).resolve().parents[1]

TABLES = ("cifar10", "cifar100", "cub200", "caltech256")

# Official split sizes and classes (docs/datasets.md, "Layouts, sources and splits").
# imagenet1k: 1,281,167 train images, 20% drawn as test by the DS_SEED split.
SPLITS = {
    "cifar10": (50_000, 10_000, 10),
    "cifar100": (50_000, 10_000, 100),
    "cub200": (5_994, 5_794, 200),
    "caltech256": (23_380, 6_400, 256),
    "tinyimagenet200": (100_000, 10_000, 200),
    "imagenet1k": (1_281_167 - 256_233, 256_233, 1000),
}
# The models gpu_smoke.py measures for each table: (arch, pixels) of the victim and of the shadows.
MODELS = {
    "cifar10": (("vgg16_bn", 32), ("alexnet", 32)),
    "cifar100": (("vgg16_bn", 32), ("alexnet", 32)),
    "cub200": (("resnet50", 224), ("alexnet", 224)),
    "caltech256": (("resnet50", 224), ("alexnet", 224)),
}


@dataclass
class Work:
    """Images through each model: training (forward + backward) and inference (forward)."""
    train: Counter = field(default_factory=Counter)
    infer: Counter = field(default_factory=Counter)

    def add(self, other: "Work") -> None:
        self.train.update(other.train)
        self.infer.update(other.infer)


def launcher_jobs(table: str) -> list[list[str]]:
    """Every job of the launcher's dry run, as its overrides (comma lists expanded)."""
    env = dict(os.environ, DRY_RUN="1", PYTHON="python")
    listing = subprocess.run(["bash", "launchers/paper_table.sh", table], cwd=REPO, env=env,
                             capture_output=True, text=True, check=True).stdout
    jobs = []
    for line in listing.splitlines():
        if not line.startswith("python main.py -m "):
            continue
        args = [a for a in shlex.split(line)[4:]
                if not a.startswith(("sweep_name=", "hydra.", "+hydra.", "progress="))]
        expanded = [[]]
        for a in args:
            key, _, value = a.partition("=")
            choices = value.split(",") if key in ("defense", "seed") else [value]
            expanded = [job + [f"{key}={v}"] for job in expanded for v in choices]
        jobs.extend(expanded)
    return jobs


def jbda_rounds(seed_size: int, variants: int, budget: int) -> list[int]:
    """Sizes of the transfer set at each JBDA-TR round (policy/jbda.py's loop), then the final one."""
    sizes, size = [], min(seed_size, budget)
    while size < budget:
        sizes.append(size)
        size = min(budget, size + variants * size)
    return sizes + [size]


def job_work(cfg, table: str) -> tuple[Work, bool]:
    """The work of one job, and whether it needs the shadows."""
    n_train, n_test, _ = SPLITS[table]
    w = Work()
    stages = list(cfg.stages)
    if stages == ["victim"]:
        epochs = int(cfg.victim.epochs)
        per_epoch = n_train * (1 + (cfg.victim.oe_lambda > 0) + bool(cfg.victim.misinformation))
        w.train["victim"] += epochs * per_epoch
        w.infer["victim"] += epochs * n_test + (n_test if cfg.victim.misinformation else 0)
        return w, False
    budget = int(cfg.attack.budget)
    defense = cfg.defense._target_.rsplit(".", 1)[-1]
    answers = 2 if defense in ("AdaptiveMisinformation", "MAD") else 1
    w.infer["victim"] += answers * n_test + n_test                              # utility, fidelity
    w.infer["victim"] += answers * budget * int(cfg.attack.queries_per_image)  # the queries
    rotation = 5 if float(cfg.attack.rotation_weight) > 0 else 1
    epochs = int(cfg.substitute.epochs)
    if cfg.policy._target_.endswith(".JacobianAugmentation"):
        sizes = jbda_rounds(int(cfg.policy.seed_size), int(cfg.policy.variants), budget)
        w.train["victim"] += int(cfg.policy.steps) * (budget - sizes[0])      # PGD on the synthetic images
    else:
        sizes = [budget]
    for size in sizes:
        w.train["victim"] += epochs * size * rotation
        w.infer["victim"] += epochs * n_test
    source = cfg.attack.get("table_source") or {}
    shadows = "ShadowModels" in str(source.get("_target_", ""))
    if shadows:
        w.infer["shadow"] += int(source.count) * budget
    return w, shadows


def shadow_work(cfg, table: str, pool: str) -> Work:
    pool_train, pool_test, pool_classes = SPLITS[pool]
    k = SPLITS[table][2]
    w = Work()
    count, epochs = int(cfg.attack.table_source.count), int(cfg.substitute.shadow_epochs)
    w.train["shadow"] += count * epochs * pool_train * k // pool_classes
    w.infer["shadow"] += count * epochs * pool_test * k // pool_classes
    return w


def pool_of(cfg) -> str:
    name = str(cfg.dataset.pool._target_).rsplit(".", 1)[-1].lower()
    if name in SPLITS:
        return name
    raise SystemExit(f"unknown query pool {cfg.dataset.pool._target_}: add its split sizes to SPLITS")


def table_work(table: str, show_jobs: bool = False) -> tuple[Work, int]:
    """The table's work and its number of jobs (the victims' job aside). Hydra must be initialised
    (``main``); seeds share one composed config (they change no count), and each seed trains its
    shadows once."""
    total, jobs, shadow_seeds, configs = Work(), 0, set(), {}
    for overrides in launcher_jobs(table):
        seed = next(o for o in overrides if o.startswith("seed="))
        key = tuple(o for o in overrides if o != seed)
        if key not in configs:
            configs[key] = compose(config_name="main", overrides=list(overrides))
        cfg = configs[key]
        w, shadows = job_work(cfg, table)
        if shadows and seed not in shadow_seeds:
            shadow_seeds.add(seed)
            w.add(shadow_work(cfg, table, pool_of(cfg)))
        jobs += list(cfg.stages) != ["victim"]
        total.add(w)
        if show_jobs:
            print(f"  {' '.join(overrides[1:]):<70} train {dict(w.train)} infer {dict(w.infer)}")
    return total, jobs


def throughput_of(figures: dict, arch: str, size: int, fast: bool) -> dict | None:
    rows = [m for m in figures["models"] if m["model"] == arch and m["size"] == size]
    picked = [m for m in rows if m["amp"] == fast] or rows
    return picked[0] if picked else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tables", nargs="*", default=list(TABLES), help=f"some of {', '.join(TABLES)}")
    parser.add_argument("--throughput", type=Path, help="gpu_smoke.py --json output: adds the hours")
    parser.add_argument("--amp", action="store_true", help="use the amp + channels_last figures (CUDA runs have them)")
    parser.add_argument("--jobs", action="store_true", help="print every job's count")
    args = parser.parse_args()
    for t in args.tables:
        if t not in TABLES:
            parser.error(f"table {t!r} is not one of {', '.join(TABLES)}")
    figures = json.loads(args.throughput.read_text()) if args.throughput else None
    if figures:
        print(f"throughputs: {args.throughput} ({figures['device']}: {figures['device_name']}), "
              f"{'amp + channels_last' if args.amp else 'float32'}")
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        works = {table: table_work(table, args.jobs) for table in args.tables}
    head = "| table | jobs | training images (victim arch) | inference images (victim arch) | shadow training | shadow inference |"
    if figures:
        head += " hours |"
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    for table in args.tables:
        work, jobs = works[table]
        (arch, px), (shadow_arch, shadow_px) = MODELS[table]
        cells = [f"{table} (`{arch}`, {px} px)", str(jobs)] + [
            f"{n / 1e6:.1f} M" for n in (work.train["victim"], work.infer["victim"],
                                        work.train["shadow"], work.infer["shadow"])]
        if figures:
            seconds = 0.0
            for (a, p), role in (((arch, px), "victim"), ((shadow_arch, shadow_px), "shadow")):
                m = throughput_of(figures, a, p, args.amp)
                if m is None:
                    raise SystemExit(f"{args.throughput} has no {a} at {p} px: rerun benchmarks/gpu_smoke.py")
                seconds += work.train[role] / m["train_img_s"] + work.infer[role] / m["infer_img_s"]
            cells.append(f"{seconds / 3600:,.1f}" if seconds < 360_000 else f"{seconds / 3600:,.0f}")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
