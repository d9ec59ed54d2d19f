"""Random label noise: replace a fixed fraction of the training labels by uniformly random classes.

As in Zhang et al. (2017) and the noisy-label experiments of No Free Prune, a replaced label is drawn
uniformly from ALL K classes, so it may coincide with the original (probability 1/K). We do not force a
different class: that would make the new label depend on the old one, hence on x, whereas a uniformly
drawn label is independent of x, which is what "noise the network can only memorize" means. ``corrupted``
records which labels were re-drawn; ``info['num_changed']`` counts those that actually differ.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune.data.dataset import Dataset, rng
from jaxprune.errors import ConfigError


def corrupt_labels(y: jax.Array, num_classes: int, fraction: float, key_or_seed: jax.Array | int
                   ) -> tuple[jax.Array, jax.Array]:
    """(y_new, corrupted): exactly round(fraction * N) labels, a uniformly random subset, re-drawn from
    Uniform{0..K-1}; y_new = y elsewhere. For one key: jit- and vmap-able (``fraction`` may be traced).

    The subset is {i : pi(i) < round(fraction * N)} for a uniform random permutation pi of range(N).
    """
    key = jax.random.key(key_or_seed) if isinstance(key_or_seed, (int, np.integer)) else key_or_seed
    subset_key, class_key = jax.random.split(key)
    y = jnp.asarray(y)
    num_corrupted = jnp.round(fraction * y.shape[0])
    corrupted = jax.random.permutation(subset_key, y.shape[0]) < num_corrupted
    random_classes = jax.random.randint(class_key, y.shape, 0, num_classes, dtype=y.dtype)
    return jnp.where(corrupted, random_classes, y), corrupted


def with_label_noise(dataset: Dataset, label_noise: float, data_seed: int) -> Dataset:
    """``dataset`` with a ``label_noise`` fraction of its training labels corrupted by the key of data_seed."""
    if not 0.0 <= label_noise <= 1.0:
        raise ConfigError(f"label_noise={label_noise}: must be a fraction in [0, 1]")
    if label_noise == 0.0:
        return dataset
    if dataset.num_classes == 0:
        raise ConfigError(f"label_noise={label_noise}: needs a classification task (regression: noise_std)")
    y_new, corrupted = corrupt_labels(dataset.clean_y_train, dataset.num_classes, label_noise, data_seed)
    y_new, corrupted = np.asarray(y_new), np.asarray(corrupted)
    info = dataset.info | {
        "label_noise": label_noise,
        "num_corrupted": int(corrupted.sum()),
        "num_changed": int((y_new != dataset.clean_y_train).sum()),
    }
    return dataclasses.replace(dataset, y_train=y_new, corrupted=corrupted, info=info)


def redrawn(dataset: Dataset, data_seed: int, random: np.ndarray | None = None) -> Dataset:
    """D′, an independent draw of ``dataset``'s randomness with everything else kept (the swap control of the
    memorization and noise-correlation experiments): the same inputs, clean targets and test set; drawn again from
    the stream ``'redraw'`` of ``data_seed`` (:func:`jaxprune.data.dataset.rng`), independently of D's draw:

    - classification: the training labels at the positions ``random`` (bool [N], the labels that are random in D),
      each uniform on the K classes; the others kept;
    - regression: the noise z′ ~ N(0, σ²), σ = ``info['noise_std']``: y′ = clean_y_train + z′, ``noise`` = y′ −
      clean_y_train in float32 (as :mod:`jaxprune.data.gaussian` stores z).
    """
    draw = rng(data_seed, "redraw")
    if dataset.num_classes == 0:
        z = draw.normal(0.0, dataset.info["noise_std"], len(dataset.clean_y_train))
        y = (dataset.clean_y_train + z).astype(np.float32)
        return dataclasses.replace(dataset, y_train=y, noise=y - dataset.clean_y_train)
    labels = draw.integers(0, dataset.num_classes, len(dataset.y_train)).astype(dataset.y_train.dtype)
    return dataclasses.replace(dataset, y_train=np.where(random, labels, dataset.y_train))
