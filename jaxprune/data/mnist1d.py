"""MNIST-1D (Greydanus & Kobak 2020), generated locally: 10 classes of 1-D signals of length 40.

The data come from ``mnist1d.data.make_dataset(get_dataset_args())`` with ``args.seed = data_seed``
(never the download path): 5000 signals split 4000 train / 1000 test. Note that mnist1d's own default seed
is 42, so ``data_seed=42`` reproduces the published arrays. Inputs are standardized with ONE scalar mean
and std of the (possibly subsampled) training set, as an image channel is (a signal has one channel).
"""
from __future__ import annotations

import contextlib
import functools
import random
from collections.abc import Iterator

import mnist1d.data
import numpy as np

from jaxprune.data.dataset import Dataset, classification, standardize, subset_indices

NUM_CLASSES = 10


@contextlib.contextmanager
def _global_rngs_restored() -> Iterator[None]:
    """``make_dataset`` reseeds Python's and numpy's global RNGs; restore their states afterwards."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


@functools.lru_cache(maxsize=8)
def generate(data_seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read-only (x_train, y_train, x_test, y_test) of mnist1d with seed ``data_seed``, cached per process
    (generation takes ~1.5 s)."""
    args = mnist1d.data.get_dataset_args()
    args.seed = data_seed
    with _global_rngs_restored():
        raw = mnist1d.data.make_dataset(args)
    arrays = raw["x"], raw["y"], raw["x_test"], raw["y_test"]
    for array in arrays:
        array.setflags(write=False)
    return arrays


def load(data_seed: int, num_examples: int, num_test: int) -> Dataset:
    """MNIST-1D of ``data_seed``; ``num_examples`` / ``num_test`` > 0 keep a random subset of that size."""
    x_train, y_train, x_test, y_test = generate(data_seed)
    train = subset_indices(len(y_train), num_examples, data_seed, "num_examples")
    test = subset_indices(len(y_test), num_test, data_seed, "num_test")
    x_train, x_test, stats = standardize(x_train[train], x_test[test], axes=None)
    info = {
        "source": "mnist1d.data.make_dataset(get_dataset_args()) with args.seed=data_seed",
        "data_seed": data_seed,
        "num_train": len(train),
        "num_test": len(test),
        "normalization": stats,
    }
    return classification("mnist1d", x_train, y_train[train], x_test, y_test[test], NUM_CLASSES, info)
