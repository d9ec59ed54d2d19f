"""Synthetic Gaussian data: the setting of the Law of Robustness (Bubeck & Sellke) used by No Free Prune.

Inputs x ~ N(0, I_d / d), so ||x|| ~= 1 and the distribution is c/d-isoperimetric as in the theorem whose
bound Lip(f) >~ sigma sqrt(n d / p) the experiments compare against (multiply x by sqrt(d) for
unit-variance features). Targets:

* classification, ``labels='random'``: y ~ Uniform{0..K-1}, independent of x (pure memorization);
* classification, ``labels='teacher'``: y = argmax_k f*(x)_k for a random teacher f*;
* regression: y = f*(x) + z, z ~ N(0, noise_std^2), f* a random teacher with one output; ``y_test`` is the
  clean f*(x_test), so test MSE is the excess risk.

The teacher acts on the unit-variance coordinates h_0 = sqrt(d) x. Linear (``teacher_widths == ()``):
f*(x) = h_0 Q; hidden ReLU layers of widths (w_1, …, w_L): h_l = phi(h_{l-1} W_l / sqrt(w_{l-1})) with W_l
i.i.d. N(0, 1) [w_{l-1}, w_l] (w_0 = d), f*(x) = h_L Q, and phi(u) = (relu(u) - 1/sqrt(2 pi)) /
sqrt(1/2 - 1/(2 pi)) the ReLU centred and scaled to mean 0, variance 1 on u ~ N(0, 1). Q has uniformly random
orthonormal columns, so the linear teacher's outputs are exactly i.i.d. N(0, 1): its argmax classes are exactly
uniform and its regression target has unit variance (the hidden teachers' are close to that). Q needs its fan-in
(d, or w_L) >= the number of outputs.

Two draws of the same distribution:

* :func:`load`, on the host: every draw comes from ``data_seed`` alone (one numpy stream per kind of draw);
* :func:`draw`, on device, jittable and vmappable: ONE seed's dataset from a JAX key (one
  ``fold_in(key, stream)`` per kind of draw), so a sweep draws every seed's own dataset inside its vmapped,
  sharded program (``config.data_per_seed``, :func:`jaxprune.experiments.common.setup`).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune.data.dataset import STREAMS, Dataset, classification, rng
from jaxprune.errors import ConfigError

LABELS = ("random", "teacher")
TASKS = ("classification", "regression")
_RELU_MEAN = 1.0 / np.sqrt(2.0 * np.pi)  # E relu(u), u ~ N(0, 1)
_RELU_STD = np.sqrt(0.5 - 1.0 / (2.0 * np.pi))  # std relu(u)


def inputs(data_seed: int, num_examples: int, num_test: int, input_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 x ~ N(0, I_d / d): the first ``num_examples`` rows train, the next ``num_test`` test."""
    x = rng(data_seed, "inputs").standard_normal((num_examples + num_test, input_dim)) / np.sqrt(input_dim)
    x = x.astype(np.float32)
    return x[:num_examples], x[num_examples:]


def teacher_shapes(input_dim: int, teacher_widths, num_outputs: int) -> list[tuple[int, int]]:
    """Shapes of the teacher's weights W_1, …, W_L, Q (module docstring)."""
    fan_ins = (input_dim, *teacher_widths)
    return list(zip(fan_ins, (*teacher_widths, num_outputs)))


def haar_columns(gaussian, xp=np):
    """Q with uniformly random orthonormal columns from a Gaussian matrix: QR with the signs of R's diagonal
    fixed, which makes Q Haar-distributed (``xp``: numpy or jax.numpy)."""
    q, r = xp.linalg.qr(gaussian)
    return q * xp.sign(xp.diagonal(r))


def teacher_weights(data_seed: int, input_dim: int, teacher_widths, num_outputs: int) -> list[np.ndarray]:
    """The teacher's weights: W_1, …, W_L i.i.d. N(0, 1), then Q (:func:`haar_columns`), in that order from
    the 'teacher' stream of ``data_seed``."""
    draw = rng(data_seed, "teacher")
    gaussians = [draw.standard_normal(shape) for shape in teacher_shapes(input_dim, teacher_widths, num_outputs)]
    return gaussians[:-1] + [haar_columns(gaussians[-1])]


def teacher_apply(weights: list, x, xp=np):
    """f*(x): h = sqrt(d) x, then h <- phi(h W / sqrt(fan_in)) per hidden layer, then h Q; in float64 on the
    host (``xp=np``), in x's dtype with ``xp=jax.numpy``."""
    h = np.sqrt(x.shape[1]) * (np.asarray(x, np.float64) if xp is np else x)
    for w in weights[:-1]:
        h = (xp.maximum(h @ w / np.sqrt(w.shape[0]), 0.0) - _RELU_MEAN) / _RELU_STD
    return h @ weights[-1]


def check(num_examples: int, num_test: int, input_dim: int, num_classes: int, labels: str, task: str,
          teacher_widths, noise_std: float) -> None:
    """Raise ConfigError naming the first key whose value the Gaussian data cannot use."""
    if task not in TASKS:
        raise ConfigError(f"task={task!r}: must be one of {TASKS}")
    if labels not in LABELS:
        raise ConfigError(f"labels={labels!r}: must be one of {LABELS}")
    for key, value, least in [("num_examples", num_examples, 1), ("num_test", num_test, 1),
                              ("input_dim", input_dim, 1), ("num_classes", num_classes, 2)]:
        if value < least:
            raise ConfigError(f"{key}={value}: the gaussian dataset needs {key} >= {least}")
    if not all(isinstance(w, int) and w >= 1 for w in teacher_widths):
        raise ConfigError(f"teacher_widths={tuple(teacher_widths)!r}: must be a tuple of positive integers "
                          "(() = linear teacher)")
    teacher_fan_in = ("teacher_widths[-1]", teacher_widths[-1]) if teacher_widths else ("input_dim", input_dim)
    if task == "classification" and labels == "teacher" and teacher_fan_in[1] < num_classes:
        raise ConfigError(f"{teacher_fan_in[0]}={teacher_fan_in[1]}: a teacher needs it >= num_classes={num_classes}")
    if noise_std < 0:
        raise ConfigError(f"noise_std={noise_std}: must be >= 0")


def load(*, data_seed: int, num_examples: int, num_test: int, input_dim: int, num_classes: int,
         labels: str, task: str, teacher_widths, noise_std: float) -> Dataset:
    """The Gaussian dataset of ``data_seed`` (see the module docstring); arguments are the config keys."""
    check(num_examples, num_test, input_dim, num_classes, labels, task, teacher_widths, noise_std)
    x_train, x_test = inputs(data_seed, num_examples, num_test, input_dim)
    info = {
        "source": "gaussian: x ~ N(0, I/d)", "data_seed": data_seed, "num_train": num_examples,
        "num_test": num_test, "input_dim": input_dim, "task": task, "teacher_widths": list(teacher_widths),
    }
    if task == "regression":
        return _regression(x_train, x_test, data_seed, teacher_widths, noise_std, info)
    if labels == "random":
        y = rng(data_seed, "labels").integers(0, num_classes, num_examples + num_test)
        y_train, y_test = y[:num_examples], y[num_examples:]
    else:
        weights = teacher_weights(data_seed, input_dim, teacher_widths, num_classes)
        y_train, y_test = (teacher_apply(weights, x).argmax(axis=1) for x in (x_train, x_test))
    info |= {"labels": labels}
    return classification("gaussian", x_train, y_train, x_test, y_test, num_classes, info)


def _regression(x_train: np.ndarray, x_test: np.ndarray, data_seed: int, teacher_widths,
                noise_std: float, info: dict) -> Dataset:
    """y_train = f*(x_train) + z with z ~ N(0, noise_std^2); stored noise = y_train - f*(x_train) in float32
    (z up to float32 rounding), so the identity holds exactly; y_test = f*(x_test)."""
    weights = teacher_weights(data_seed, x_train.shape[1], teacher_widths, 1)
    clean_train, clean_test = (teacher_apply(weights, x)[:, 0].astype(np.float32) for x in (x_train, x_test))
    z = rng(data_seed, "regression_noise").normal(0.0, noise_std, len(clean_train))
    y_train = (clean_train + z).astype(np.float32)
    return Dataset(
        name="gaussian", x_train=x_train, y_train=y_train, x_test=x_test, y_test=clean_test, num_classes=0,
        clean_y_train=clean_train, corrupted=np.zeros(len(y_train), bool), noise=y_train - clean_train,
        info=info | {"noise_std": noise_std},
    )


class SeedData(NamedTuple):
    """ONE seed's dataset as device arrays (:func:`draw`): the fields of :class:`~jaxprune.data.Dataset` that
    training reads; ``noise`` = z (regression), None for classification."""

    x_train: jax.Array  # float32 [n, d]
    y_train: jax.Array  # int32 [n] classes, or float32 [n] targets
    x_test: jax.Array
    y_test: jax.Array  # the clean targets
    noise: Any = None  # float32 [n] regression noise y_train − f*(x_train), None for classification


def draw(key: jax.Array, *, num_examples: int, num_test: int, input_dim: int, num_classes: int, labels: str,
         task: str, teacher_widths, noise_std: float) -> SeedData:
    """ONE seed's Gaussian dataset drawn from ``key`` on device: the distribution of :func:`load` (module
    docstring), each kind of draw from its own ``fold_in(key, STREAMS.index(kind))`` (the teacher's W_1, …, W_L
    and Q from ``split`` of the 'teacher' key). Jittable and vmappable over keys (the other arguments are static
    config values); float32 throughout, where the host draw computes the teacher in float64.

    Regression: y_train = f*(x_train) + z, z ~ N(0, noise_std²), ``noise`` = y_train − f*(x_train) (z up to float32
    rounding), y_test = f*(x_test). Classification: y ~ Uniform{0..K−1} independent of x (``labels='random'``) or
    argmax_k f*(x)_k."""
    check(num_examples, num_test, input_dim, num_classes, labels, task, teacher_widths, noise_std)
    n = num_examples
    stream = lambda kind: jax.random.fold_in(key, STREAMS.index(kind))  # noqa: E731
    x = jax.random.normal(stream("inputs"), (n + num_test, input_dim)) / np.sqrt(input_dim)
    if task == "classification" and labels == "random":
        y = jax.random.randint(stream("labels"), (n + num_test,), 0, num_classes, jnp.int32)
        return SeedData(x[:n], y[:n], x[n:], y[n:])
    shapes = teacher_shapes(input_dim, teacher_widths, 1 if task == "regression" else num_classes)
    gaussians = [jax.random.normal(k, s) for k, s in zip(jax.random.split(stream("teacher"), len(shapes)), shapes)]
    f = teacher_apply(gaussians[:-1] + [haar_columns(gaussians[-1], jnp)], x, jnp)
    if task == "classification":
        y = jnp.argmax(f, axis=1).astype(jnp.int32)
        return SeedData(x[:n], y[:n], x[n:], y[n:])
    clean = f[:, 0]
    y_train = clean[:n] + noise_std * jax.random.normal(stream("regression_noise"), (n,))
    return SeedData(x[:n], y_train, x[n:], clean[n:], y_train - clean[:n])
