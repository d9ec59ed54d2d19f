"""The :class:`Dataset` record every loader returns, and the helpers the loaders share.

Randomness: every draw of a dataset comes from ``data_seed`` alone, independent of model seeds. Each kind
of draw (inputs, teacher, labels, regression noise, subsets) has its own numpy stream
``np.random.default_rng([data_seed, stream])`` (a SeedSequence per pair), so e.g. changing the test size
never changes the training set. Label-noise corruption uses the JAX key ``jax.random.key(data_seed)``
(see :mod:`jaxprune.data.noise`), so it can be vmapped over keys.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jaxprune.errors import ConfigError

STREAMS = ("inputs", "teacher", "labels", "regression_noise", "train_subset", "test_subset", "redraw")


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test split as host numpy arrays; experiments put them on device.

    ``y_train = clean_y_train`` except where label noise replaced a label (``corrupted``) or, for
    regression, ``y_train = clean_y_train + noise`` with ``clean_y_train = f*(x_train)``. The test set is
    never corrupted: ``y_test`` is the clean target, so test error measures the distance to f*.
    """

    name: str
    x_train: np.ndarray  # float32 [N, ...features]
    y_train: np.ndarray  # int32 [N] classes, or float32 [N] regression targets
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int  # 0 for regression
    clean_y_train: np.ndarray  # training targets before corruption / noise
    corrupted: np.ndarray  # bool [N]: labels replaced by label-noise corruption
    noise: np.ndarray | None  # float32 [N] regression noise z = y_train - clean_y_train, else None
    info: dict[str, Any]  # JSON-able description: source, sizes, normalization, seeds


def classification(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    num_classes: int,
    info: dict[str, Any],
) -> Dataset:
    """A noise-free classification :class:`Dataset`: float32 inputs, int32 labels, nothing corrupted."""
    y_train = np.asarray(y_train, np.int32)
    return Dataset(
        name=name,
        x_train=np.asarray(x_train, np.float32),
        y_train=y_train,
        x_test=np.asarray(x_test, np.float32),
        y_test=np.asarray(y_test, np.int32),
        num_classes=num_classes,
        clean_y_train=y_train,
        corrupted=np.zeros(len(y_train), bool),
        noise=None,
        info=info,
    )


def rng(data_seed: int, stream: str) -> np.random.Generator:
    """The numpy generator of one kind of draw (a name in ``STREAMS``) of dataset ``data_seed``."""
    return np.random.default_rng([data_seed, STREAMS.index(stream)])


def subset_indices(total: int, size: int, data_seed: int, key: str) -> np.ndarray:
    """Sorted indices of a uniformly random ``size``-subset of ``range(total)``; all of them if size == 0.

    ``key`` is the config key that set ``size`` ('num_examples' or 'num_test'); it names the stream too.
    """
    if size == 0:
        return np.arange(total)
    if not 0 < size <= total:
        raise ConfigError(f"{key}={size}: must be 0 (the whole split) or between 1 and {total}")
    stream = "train_subset" if key == "num_examples" else "test_subset"
    return np.sort(rng(data_seed, stream).choice(total, size, replace=False))


def standardize(
    x_train: np.ndarray, x_test: np.ndarray, axes: tuple[int, ...] | None
) -> tuple[np.ndarray, np.ndarray, dict[str, list[float]]]:
    """x <- (x - mu) / sigma for both splits, mu and sigma the training-set mean and std over ``axes``.

    The axes not reduced are channels (images: ``axes=(0, 1, 2)``, one statistic per channel; ``None``:
    one scalar statistic). Statistics are computed in float64; returns float32 arrays and the statistics.
    """
    mean = x_train.mean(axis=axes, dtype=np.float64, keepdims=True)
    std = x_train.std(axis=axes, dtype=np.float64, keepdims=True)
    stats = {"mean": mean.ravel().tolist(), "std": std.ravel().tolist()}
    return (
        ((x_train - mean) / std).astype(np.float32),
        ((x_test - mean) / std).astype(np.float32),
        stats,
    )
