"""Synthetic Gaussian data: the setting of the Law of Robustness (Bubeck & Sellke) used by No Free Prune.

Inputs x ~ N(0, I_d / d), so ||x|| ~= 1 and the distribution is c/d-isoperimetric as in the theorem whose
bound Lip(f) >~ sigma sqrt(n d / p) the experiments compare against (multiply x by sqrt(d) for
unit-variance features). Targets:

* classification, ``labels='random'``: y ~ Uniform{0..K-1}, independent of x (pure memorization);
* classification, ``labels='teacher'``: y = argmax_k f*(x)_k for a random teacher f*;
* regression: y = f*(x) + z, z ~ N(0, noise_std^2), f* a random teacher with one output; ``y_test`` is the
  clean f*(x_test), so test MSE is the excess risk.

The teacher acts on the unit-variance coordinates sqrt(d) x. Linear (``teacher_width == 0``):
f*(x) = sqrt(d) x Q; one hidden layer of width h: f*(x) = phi(x W_1) Q with W_1 i.i.d. N(0, 1) and
phi(u) = (relu(u) - 1/sqrt(2 pi)) / sqrt(1/2 - 1/(2 pi)) the ReLU centred and scaled to mean 0, variance 1
on u ~ N(0, 1). Q has uniformly random orthonormal columns, so the linear teacher's outputs are exactly
i.i.d. N(0, 1): its argmax classes are exactly uniform and its regression target has unit variance (the
hidden teacher's are close to that). Q needs its fan-in (d, or h) >= the number of outputs. Every draw
comes from ``data_seed`` alone (one numpy stream per kind of draw).
"""
from __future__ import annotations

import numpy as np

from jaxprune.data.dataset import Dataset, classification, rng
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


def teacher_weights(data_seed: int, input_dim: int, teacher_width: int, num_outputs: int) -> list[np.ndarray]:
    """The teacher's weights: [W_1,] Q, W_1 i.i.d. N(0, 1) and Q uniformly random orthonormal columns
    (QR of a Gaussian matrix with the signs of R's diagonal fixed, which makes Q Haar-distributed)."""
    draw = rng(data_seed, "teacher")
    hidden = [draw.standard_normal((input_dim, teacher_width))] if teacher_width else []
    q, r = np.linalg.qr(draw.standard_normal((teacher_width or input_dim, num_outputs)))
    return hidden + [q * np.sign(np.diag(r))]


def teacher_apply(weights: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    """f*(x) in float64: h = sqrt(d) x, then h <- phi(h W / sqrt(fan_in)) per hidden layer, then h Q."""
    h = np.sqrt(x.shape[1]) * np.asarray(x, np.float64)
    for w in weights[:-1]:
        h = (np.maximum(h @ w / np.sqrt(w.shape[0]), 0.0) - _RELU_MEAN) / _RELU_STD
    return h @ weights[-1]


def _check(num_examples: int, num_test: int, input_dim: int, num_classes: int, labels: str, task: str,
           teacher_width: int, noise_std: float) -> None:
    """Raise ConfigError naming the first key whose value the Gaussian data cannot use."""
    if task not in TASKS:
        raise ConfigError(f"task={task!r}: must be one of {TASKS}")
    if labels not in LABELS:
        raise ConfigError(f"labels={labels!r}: must be one of {LABELS}")
    for key, value, least in [("num_examples", num_examples, 1), ("num_test", num_test, 1),
                              ("input_dim", input_dim, 1), ("num_classes", num_classes, 2),
                              ("teacher_width", teacher_width, 0)]:
        if value < least:
            raise ConfigError(f"{key}={value}: the gaussian dataset needs {key} >= {least}")
    teacher_fan_in = ("teacher_width", teacher_width) if teacher_width else ("input_dim", input_dim)
    if task == "classification" and labels == "teacher" and teacher_fan_in[1] < num_classes:
        raise ConfigError(f"{teacher_fan_in[0]}={teacher_fan_in[1]}: a teacher needs it >= num_classes={num_classes}")
    if noise_std < 0:
        raise ConfigError(f"noise_std={noise_std}: must be >= 0")


def load(*, data_seed: int, num_examples: int, num_test: int, input_dim: int, num_classes: int,
         labels: str, task: str, teacher_width: int, noise_std: float) -> Dataset:
    """The Gaussian dataset of ``data_seed`` (see the module docstring); arguments are the config keys."""
    _check(num_examples, num_test, input_dim, num_classes, labels, task, teacher_width, noise_std)
    x_train, x_test = inputs(data_seed, num_examples, num_test, input_dim)
    info = {
        "source": "gaussian: x ~ N(0, I/d)", "data_seed": data_seed, "num_train": num_examples,
        "num_test": num_test, "input_dim": input_dim, "task": task, "teacher_width": teacher_width,
    }
    if task == "regression":
        return _regression(x_train, x_test, data_seed, teacher_width, noise_std, info)
    if labels == "random":
        y = rng(data_seed, "labels").integers(0, num_classes, num_examples + num_test)
        y_train, y_test = y[:num_examples], y[num_examples:]
    else:
        weights = teacher_weights(data_seed, input_dim, teacher_width, num_classes)
        y_train, y_test = (teacher_apply(weights, x).argmax(axis=1) for x in (x_train, x_test))
    info |= {"labels": labels}
    return classification("gaussian", x_train, y_train, x_test, y_test, num_classes, info)


def _regression(x_train: np.ndarray, x_test: np.ndarray, data_seed: int, teacher_width: int,
                noise_std: float, info: dict) -> Dataset:
    """y_train = f*(x_train) + z with z ~ N(0, noise_std^2); stored noise = y_train - f*(x_train) in float32
    (z up to float32 rounding), so the identity holds exactly; y_test = f*(x_test)."""
    weights = teacher_weights(data_seed, x_train.shape[1], teacher_width, 1)
    clean_train, clean_test = (teacher_apply(weights, x)[:, 0].astype(np.float32) for x in (x_train, x_test))
    z = rng(data_seed, "regression_noise").normal(0.0, noise_std, len(clean_train))
    y_train = (clean_train + z).astype(np.float32)
    return Dataset(
        name="gaussian", x_train=x_train, y_train=y_train, x_test=x_test, y_test=clean_test, num_classes=0,
        clean_y_train=clean_train, corrupted=np.zeros(len(y_train), bool), noise=y_train - clean_train,
        info=info | {"noise_std": noise_std},
    )
