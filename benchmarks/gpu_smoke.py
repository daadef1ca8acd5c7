"""GPU smoke benchmark (issue 10 item 5): the paper's models and ModelGuard-W on a device.

    python benchmarks/gpu_smoke.py                  # CUDA when available, else CPU
    python benchmarks/gpu_smoke.py --device cpu     # the same figures on the CPU
    python benchmarks/gpu_smoke.py --quick          # small batches and few steps (a CI smoke run)

Prints, as medians over timed steps after warm-up:
- training images/s (forward, soft cross-entropy, backward, SGD step) and inference images/s
  (softmax under no_grad) for resnet50 at 224 px (CUB-200/Caltech-256 victims, 200/256
  classes), vgg16_bn at 32 px (CIFAR victims, 10/100 classes) and D-DAE's AlexNet shadows at
  224 px (imagenet family) and 32 px (cifar family), built by the project's own
  factories (normalisation layer included), each in float32 and, on CUDA, with the run's
  speed settings (``amp``: bfloat16 autocast, ``channels_last``);
- ModelGuard-W rows/s at K = 256, batch 512, float32 softmax rows, on the device and on the
  CPU in the same run, and their ratio.

Inputs are random tensors (the data path is not measured here). ``--json PATH`` also writes the
figures; ``python benchmarks/table_cost.py --throughput PATH`` turns them into hours per paper table
(README, "Paper grid").
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modelguard.arch.paper import alexnet, resnet50, vgg16_bn  # noqa: E402
from modelguard.defense.mld_solver import solve_mld  # noqa: E402
from modelguard.utils.device import resolve_device  # noqa: E402

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
CIFAR_MEAN, CIFAR_STD = [0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step, device: torch.device, warmup: int, reps: int) -> float:
    """Median seconds of ``step()`` over ``reps`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        step()
    sync(device)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def model_figures(name: str, build, size: int, classes: int, batch: int, device: torch.device,
                  amp: bool, channels_last: bool, warmup: int, reps: int) -> dict:
    torch.manual_seed(0)
    model = build(classes, size).to(device)
    if amp or channels_last:
        model.speed_up(torch.bfloat16 if amp else None, channels_last)
    x = torch.rand(batch, 3, size, size, device=device)
    y = torch.softmax(torch.randn(batch, classes, device=device), 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.5)

    def train_step():
        model.train()
        loss = -(y * F.log_softmax(model(x), 1)).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    @torch.no_grad()
    def infer_step():
        model.eval()
        F.softmax(model(x), 1)

    train_s = timed(train_step, device, warmup, reps)
    infer_s = timed(infer_step, device, warmup, reps)
    return {"model": name, "size": size, "classes": classes, "batch": batch, "amp": amp,
            "channels_last": channels_last, "train_img_s": batch / train_s, "infer_img_s": batch / infer_s}


def mld_rows_per_s(device: torch.device, rows: int, reps: int) -> float:
    g = torch.Generator().manual_seed(0)
    y = torch.softmax(3.0 * torch.randn(rows, 256, generator=g, dtype=torch.float64), 1).float().to(device)
    return rows / timed(lambda: solve_mld(y, 1.0), device, 2, reps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cuda, cuda:N or cpu")
    parser.add_argument("--quick", action="store_true", help="small batches, few steps")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    warmup, reps = (1, 3) if args.quick else (3, 10)
    big, small = (4, 16) if args.quick else ((64, 256) if cuda else (8, 64))
    name = torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {device} ({name}); torch {torch.__version__}; medians of {reps} steps after {warmup} warm-up")

    settings = [(False, False)] + ([(True, True)] if cuda else [])
    cases = [("resnet50", lambda k, s: resnet50(k, 3, s, IMAGENET_MEAN, IMAGENET_STD), 224, 256, big),
             ("vgg16_bn", lambda k, s: vgg16_bn(k, 3, s, CIFAR_MEAN, CIFAR_STD, family="cifar"), 32, 10, small),
             # D-DAE's shadows: imagenet-family AlexNet for CUB-200/Caltech-256, cifar family for CIFAR
             ("alexnet", lambda k, s: alexnet(k, 3, s, IMAGENET_MEAN, IMAGENET_STD, family="imagenet"), 224, 256, big),
             ("alexnet", lambda k, s: alexnet(k, 3, s, CIFAR_MEAN, CIFAR_STD, family="cifar"), 32, 10, small)]
    figures = {"device": str(device), "device_name": name, "models": [], "mld": {}}
    print(f"{'model':<9} {'px':>4} {'K':>4} {'batch':>5} {'amp':>5} {'ch_last':>7} {'train img/s':>12} {'infer img/s':>12}")
    for model_name, build, size, classes, batch in cases:
        for amp, channels_last in settings:
            r = model_figures(model_name, build, size, classes, batch, device, amp, channels_last, warmup, reps)
            figures["models"].append(r)
            print(f"{model_name:<9} {size:>4} {classes:>4} {batch:>5} {str(amp):>5} {str(channels_last):>7} "
                  f"{r['train_img_s']:>12,.0f} {r['infer_img_s']:>12,.0f}")

    rows = 512
    on_device = mld_rows_per_s(device, rows, 3 if args.quick else 10)
    on_cpu = on_device if not cuda else mld_rows_per_s(torch.device("cpu"), rows, 3 if args.quick else 10)
    figures["mld"] = {"K": 256, "batch": rows, "device_rows_s": on_device, "cpu_rows_s": on_cpu}
    print(f"ModelGuard-W K=256 batch {rows}: {on_device:,.0f} rows/s on {device}"
          + (f", {on_cpu:,.0f} rows/s on the CPU: {on_device / on_cpu:.1f}x" if cuda else ""))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
