"""Datasets as host numpy arrays, loaded from a flat config or a name: ``load(config) -> Dataset``,
``load("gaussian", num_examples=200)``.

Config keys (all read with ``config.get(key, default)``, so a config holds only those it needs):

* ``dataset``: one of ``DATASETS`` (required).
* ``data_seed`` (0): the dataset draw (Gaussian inputs/labels/teacher/noise, mnist1d generation, subsets,
  label noise), independent of model seeds.
* ``label_noise`` (0.0): fraction of training labels replaced by uniformly random classes (any
  classification dataset; see :mod:`jaxprune.data.noise`).
* ``input_noise_var`` (0.0): Gaussian noise of this variance added to every input entry of both splits, after
  normalization, drawn once from ``data_seed`` (per seed: from the seed's data key); labels kept
  (:func:`jaxprune.data.noise.with_input_noise`).
* ``num_examples``: training-set size; 0 (default) = the dataset's own size (gaussian: 1000 points drawn;
  others: the whole training split); > 0: gaussian draws that many, others keep a random subset of that size
  (drawn from data_seed).
* ``num_test``: test-set size, same rule (gaussian: 0 = 1000; others 0 = whole test split).
* ``data_dir`` (None or "" = the TFDS default, ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``): where TFDS
  datasets are prepared.
* gaussian only: ``input_dim`` (20), ``num_classes`` (10), ``labels`` ('random' | 'teacher'),
  ``teacher_widths`` (() = linear teacher, (w_1, …, w_L) = hidden ReLU layers of those widths), ``task``
  ('classification' | 'regression'), ``noise_std`` (0.5, regression). See :mod:`jaxprune.data.gaussian`.
* ``data_per_seed`` (False): every seed of a sweep draws its OWN dataset on device (:func:`draw`) instead of
  sharing the one of ``data_seed``; seed i's from ``data_keys(data_seed, ids)[i]``, so the same whether it runs
  alone or in the sweep. Synthetic data only (:data:`PER_SEED_DATASETS`).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxprune.data import gaussian, mnist1d, tfds_source
from jaxprune.data.dataset import STREAMS, Dataset
from jaxprune.data.gaussian import SeedData
from jaxprune.data.noise import check_input_noise, corrupt_labels, with_input_noise, with_label_noise
from jaxprune.errors import ConfigError

DATASETS = ("mnist1d", "gaussian") + tfds_source.TFDS_DATASETS

GAUSSIAN_DEFAULT_SIZE = 1000  # train and test points when num_examples / num_test are 0
PER_SEED_DATASETS = ("gaussian",)  # datasets :func:`draw` draws per seed on device
DATA_STREAM = 0xDA7A  # seed i's data key: fold_in(fold_in(key(data_seed), i), DATA_STREAM)

__all__ = ["DATASETS", "Dataset", "SeedData", "corrupt_labels", "data_keys", "draw", "load"]


def gaussian_keys(config: Any) -> dict:
    """The Gaussian dataset's arguments from the config's gaussian keys (defaults in the module docstring)."""
    return dict(
        num_examples=config.get("num_examples", 0) or GAUSSIAN_DEFAULT_SIZE,
        num_test=config.get("num_test", 0) or GAUSSIAN_DEFAULT_SIZE,
        input_dim=config.get("input_dim", 20),
        num_classes=config.get("num_classes", 10),
        labels=config.get("labels", "random"),
        task=config.get("task", "classification"),
        teacher_widths=tuple(config.get("teacher_widths", ())),
        noise_std=config.get("noise_std", 0.5),
    )


def check_per_seed(config: Any) -> None:
    """ConfigError (one line) unless ``config.dataset`` can be drawn per seed with the config's keys."""
    name = config.get("dataset", None)
    if name not in PER_SEED_DATASETS:
        raise ConfigError(f"data_per_seed=True with dataset={name!r}: only {', '.join(PER_SEED_DATASETS)} can be "
                          "drawn per seed (a real dataset is one fixed sample; use data_per_seed=False)")
    if config.get("label_noise", 0.0) > 0:
        raise ConfigError(f"data_per_seed=True with label_noise={config.get('label_noise')}: per-seed draws take "
                          "labels='random' or 'teacher' without label noise")
    gaussian.check(**gaussian_keys(config))
    check_input_noise(config.get("input_noise_var", 0.0))


def draw(key: jax.Array, config: Any) -> SeedData:
    """ONE seed's dataset drawn on device from ``key`` (:func:`jaxprune.data.gaussian.draw` with the config's
    gaussian keys), with ``input_noise_var`` > 0 noise √var · ε on every input of both splits, ε ~ N(0, 1) from
    ``fold_in(key, STREAMS.index('input_noise'))``: jittable (``jax.jit(functools.partial(draw, config=config))``)
    and vmappable over keys."""
    check_per_seed(config)
    seed_data = gaussian.draw(key, **gaussian_keys(config))
    variance = config.get("input_noise_var", 0.0)
    if variance == 0:
        return seed_data
    n = seed_data.x_train.shape[0]
    x = jnp.concatenate([seed_data.x_train, seed_data.x_test])
    x = x + jnp.sqrt(variance) * jax.random.normal(jax.random.fold_in(key, STREAMS.index("input_noise")), x.shape)
    return seed_data._replace(x_train=x[:n], x_test=x[n:])


def data_keys(data_seed: int, ids) -> jax.Array:
    """Seed i's data key for every id i in ``ids``: fold_in(fold_in(key(data_seed), i), DATA_STREAM), a function of
    (data_seed, i) alone, apart from every model key (those derive from ``config.seed``)."""
    root = jax.random.key(data_seed)
    return jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(root, i), DATA_STREAM))(
        jnp.asarray(ids, jnp.int32))


def _load_gaussian(config: Any, data_seed: int) -> Dataset:
    """The Gaussian dataset of ``data_seed`` with the config's gaussian keys."""
    return gaussian.load(data_seed=data_seed, **gaussian_keys(config))


def _load_real(name: str, config: Any, data_seed: int) -> Dataset:
    """mnist1d or a TFDS dataset: classification only, optional random subsets of both splits."""
    task = config.get("task", "classification")
    if task != "classification":
        raise ConfigError(f"task={task!r}: dataset={name!r} is classification only (regression: gaussian)")
    sizes = dict(data_seed=data_seed, num_examples=config.get("num_examples", 0),
                 num_test=config.get("num_test", 0))
    if name == "mnist1d":
        return mnist1d.load(**sizes)
    return tfds_source.load(name, config.get("data_dir", None) or None, **sizes)  # TFDS: "" is no default


def as_mapping(config: Any, overrides: dict) -> Any:
    """``config`` as something with ``get``: a dataset name becomes ``{"dataset": name}``; ``overrides`` (keys of
    the module docstring) replace its keys."""
    if isinstance(config, str):
        config = {"dataset": config}
    if not overrides:
        return config
    base = config.to_dict() if hasattr(config, "to_dict") else dict(config or {})
    return {**base, **overrides}


def load(config: Any, /, **overrides) -> Dataset:
    """The dataset ``config.dataset`` drawn with ``data_seed``, with ``input_noise_var`` noise on its inputs and
    ``label_noise`` applied to its training labels (keys and defaults in the module docstring). ``config``: a
    ConfigDict, any mapping with ``get``, or a dataset name; ``overrides`` replace its keys: ``load("mnist1d")``,
    ``load("gaussian", num_examples=200)``, ``load(config, label_noise=0.1)``."""
    config = as_mapping(config, overrides)
    name = config.get("dataset", None)
    if name not in DATASETS:
        raise ConfigError(f"dataset={name!r}: must be one of {DATASETS}")
    data_seed = config.get("data_seed", 0)
    if not isinstance(data_seed, int) or data_seed < 0:
        raise ConfigError(f"data_seed={data_seed!r}: must be a non-negative integer")
    dataset = _load_gaussian(config, data_seed) if name == "gaussian" else _load_real(name, config, data_seed)
    dataset = with_input_noise(dataset, config.get("input_noise_var", 0.0), data_seed)
    return with_label_noise(dataset, config.get("label_noise", 0.0), data_seed)
