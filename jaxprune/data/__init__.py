"""Datasets as host numpy arrays, loaded from a flat config or a name: ``load(config) -> Dataset``,
``load("gaussian", num_examples=200)``.

Config keys (all read with ``config.get(key, default)``, so a config holds only those it needs):

* ``dataset``: one of ``DATASETS`` (required).
* ``data_seed`` (0): the dataset draw (Gaussian inputs/labels/teacher/noise, mnist1d generation, subsets,
  label noise), independent of model seeds.
* ``label_noise`` (0.0): fraction of training labels replaced by uniformly random classes (any
  classification dataset; see :mod:`jaxprune.data.noise`).
* ``num_examples``: training-set size; 0 (default) = the dataset's own size (gaussian: 1000 points drawn;
  others: the whole training split); > 0: gaussian draws that many, others keep a random subset of that size
  (drawn from data_seed).
* ``num_test``: test-set size, same rule (gaussian: 0 = 1000; others 0 = whole test split).
* ``data_dir`` (None or "" = the TFDS default, ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``): where TFDS
  datasets are prepared.
* gaussian only: ``input_dim`` (20), ``num_classes`` (10), ``labels`` ('random' | 'teacher'),
  ``teacher_width`` (0 = linear teacher, h > 0 = one hidden ReLU layer of width h), ``task``
  ('classification' | 'regression'), ``noise_std`` (0.5, regression). See :mod:`jaxprune.data.gaussian`.
"""
from __future__ import annotations

from typing import Any

from jaxprune.data import gaussian, mnist1d, tfds_source
from jaxprune.data.dataset import Dataset
from jaxprune.data.noise import corrupt_labels, with_label_noise
from jaxprune.errors import ConfigError

DATASETS = ("mnist1d", "gaussian") + tfds_source.TFDS_DATASETS

GAUSSIAN_DEFAULT_SIZE = 1000  # train and test points when num_examples / num_test are 0

__all__ = ["DATASETS", "Dataset", "corrupt_labels", "load"]


def _load_gaussian(config: Any, data_seed: int) -> Dataset:
    """The Gaussian dataset with the config's gaussian keys (defaults in the module docstring)."""
    return gaussian.load(
        data_seed=data_seed,
        num_examples=config.get("num_examples", 0) or GAUSSIAN_DEFAULT_SIZE,
        num_test=config.get("num_test", 0) or GAUSSIAN_DEFAULT_SIZE,
        input_dim=config.get("input_dim", 20),
        num_classes=config.get("num_classes", 10),
        labels=config.get("labels", "random"),
        task=config.get("task", "classification"),
        teacher_width=config.get("teacher_width", 0),
        noise_std=config.get("noise_std", 0.5),
    )


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
    """The dataset ``config.dataset`` drawn with ``data_seed``, with ``label_noise`` applied to its training
    labels (keys and defaults in the module docstring). ``config``: a ConfigDict, any mapping with ``get``, or a
    dataset name; ``overrides`` replace its keys: ``load("mnist1d")``, ``load("gaussian", num_examples=200)``,
    ``load(config, label_noise=0.1)``."""
    config = as_mapping(config, overrides)
    name = config.get("dataset", None)
    if name not in DATASETS:
        raise ConfigError(f"dataset={name!r}: must be one of {DATASETS}")
    data_seed = config.get("data_seed", 0)
    if not isinstance(data_seed, int) or data_seed < 0:
        raise ConfigError(f"data_seed={data_seed!r}: must be a non-negative integer")
    dataset = _load_gaussian(config, data_seed) if name == "gaussian" else _load_real(name, config, data_seed)
    return with_label_noise(dataset, config.get("label_noise", 0.0), data_seed)
