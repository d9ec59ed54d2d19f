"""Image datasets read from TFDS ArrayRecord files through ``tfds`` data sources (no TensorFlow needed).

Pixels are scaled to [0, 1], then standardized per channel with the mean and std of the (possibly
subsampled) training set, recorded in ``info['normalization']`` (full MNIST gives ~0.1307 / 0.3081).

Nothing is ever downloaded here: a dataset that is not prepared in ``data_dir`` (in ArrayRecord format)
raises ConfigError with the command that prepares it. Preparing needs TensorFlow (the ``tfds build`` CLI
and the MNIST/CIFAR generators import it) and internet, so it is done once on such a machine, and the
resulting ``data_dir`` copied to where the runs read it.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxprune.data.dataset import Dataset, classification, standardize, subset_indices
from jaxprune.errors import ConfigError

TFDS_DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100")


def prepare_command(name: str, data_dir: str) -> str:
    """The shell command that writes dataset ``name`` as ArrayRecord files under ``data_dir``."""
    return (f"pip install tensorflow tensorflow-datasets array-record && "
            f"tfds build {name} --file_format=array_record --data_dir={data_dir}")


def _check_prepared(builder, array_record) -> None:
    """Raise ConfigError (one line, with the prepare command) unless the data of the TFDS ``builder`` exist as
    ``array_record`` (TFDS's ArrayRecord file format) files."""
    if builder.is_prepared() and array_record in builder.info.available_file_formats():
        return
    root = builder.data_dir_root
    raise ConfigError(
        f"dataset={builder.name!r} is not prepared in ArrayRecord format under data_dir={str(root)!r}; "
        f"on a machine with internet run `{prepare_command(builder.name, root)}` "
        f"and make that directory available here as data_dir"
    )


def _read(source: Sequence[dict], indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images [n, H, W, C], labels [n]) of the records at ``indices``."""
    records = [source[i] for i in indices]
    return np.stack([r["image"] for r in records]), np.array([r["label"] for r in records])


def load(name: str, data_dir: str | None, data_seed: int, num_examples: int, num_test: int) -> Dataset:
    """TFDS dataset ``name`` from ``data_dir`` (None: the TFDS default, $TFDS_DATA_DIR or
    ~/tensorflow_datasets); ``num_examples`` / ``num_test`` > 0 keep a random subset drawn from data_seed.
    tensorflow_datasets is imported here, not with the module: it takes seconds and most runs never need it."""
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=data_dir)
    _check_prepared(builder, tfds.core.file_adapters.FileFormat.ARRAY_RECORD)
    train_source, test_source = (builder.as_data_source(split=split) for split in ("train", "test"))
    train = subset_indices(len(train_source), num_examples, data_seed, "num_examples")
    test = subset_indices(len(test_source), num_test, data_seed, "num_test")
    (train_images, y_train), (test_images, y_test) = _read(train_source, train), _read(test_source, test)
    x_train, x_test, stats = standardize(train_images / 255.0, test_images / 255.0, axes=(0, 1, 2))
    info = {
        "source": f"tfds.data_source({name!r}) ArrayRecord, version {builder.version}",
        "data_dir": str(builder.data_dir_root),
        "data_seed": data_seed,
        "num_train": len(train),
        "num_test": len(test),
        "normalization": stats | {"scale": "x / 255 then (x - mean) / std per channel"},
    }
    num_classes = builder.info.features["label"].num_classes
    return classification(name, x_train, y_train, x_test, y_test, num_classes, info)
