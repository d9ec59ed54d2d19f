"""Tests for jaxprune.data: shapes, dtypes and standardization of every source, seeding, the statistics of
random / teacher labels and regression noise against their definitions, exact label-noise counts, TFDS
loading under ``tfds.testing.mock_data`` and the errors for unprepared or unknown datasets."""
from __future__ import annotations

import json
import os

import jax
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from scipy import stats

from jaxprune import data
from jaxprune.data import gaussian, mnist1d, tfds_source
from jaxprune.errors import ConfigError

P_FAIL = 1e-4  # chance that a correct implementation fails a chi-square test


def load(**keys) -> data.Dataset:
    return data.load(ml_collections.ConfigDict(keys))


def chi2_uniform(labels: np.ndarray, num_classes: int) -> float:
    """Pearson chi-square statistic of the label counts against Uniform{0..K-1}."""
    counts = np.bincount(labels, minlength=num_classes)
    expected = len(labels) / num_classes
    return float(((counts - expected) ** 2 / expected).sum())


def assert_standardized(x: np.ndarray, axes: tuple[int, ...] | None) -> None:
    np.testing.assert_allclose(x.mean(axis=axes, dtype=np.float64), 0.0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=axes, dtype=np.float64), 1.0, rtol=1e-5)


def assert_same(a: data.Dataset, b: data.Dataset) -> None:
    for field in ("x_train", "y_train", "x_test", "y_test", "clean_y_train", "corrupted"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def assert_clean_classification(ds: data.Dataset, num_classes: int) -> None:
    assert ds.x_train.dtype == ds.x_test.dtype == np.float32
    assert ds.y_train.dtype == ds.y_test.dtype == np.int32
    assert ds.num_classes == num_classes and ds.noise is None
    assert 0 <= ds.y_train.min() and ds.y_train.max() < num_classes
    np.testing.assert_array_equal(ds.clean_y_train, ds.y_train)
    assert ds.corrupted.dtype == bool and not ds.corrupted.any()
    json.dumps(ds.info)


# ---------------------------------------------------------------------------------------------- mnist1d


def test_mnist1d_shapes_and_standardization():
    state = np.random.get_state()[1].copy()
    ds = load(dataset="mnist1d")
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # global numpy RNG left alone
    assert ds.x_train.shape == (4000, 40) and ds.x_test.shape == (1000, 40)
    assert_clean_classification(ds, 10)
    assert_standardized(ds.x_train, axes=None)
    raw_train, _, raw_test, raw_y_test = mnist1d.generate(0)
    mean, std = ds.info["normalization"]["mean"][0], ds.info["normalization"]["std"][0]
    assert mean == pytest.approx(raw_train.mean()) and std == pytest.approx(raw_train.std())
    np.testing.assert_allclose(ds.x_test, (raw_test - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(ds.y_test, raw_y_test)


def test_mnist1d_seeds_and_the_disk_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    mnist1d.generate.cache_clear()
    try:
        first = mnist1d.generate(0)  # generated, then written to the cache
        assert os.path.exists(mnist1d.cache_path(0)) and str(tmp_path) in mnist1d.cache_path(0)
        mnist1d.generate.cache_clear()
        cached = mnist1d.generate(0)  # read back from disk
        for array, made, regenerated in zip(cached, first, mnist1d.make(0)):
            np.testing.assert_array_equal(array, regenerated)
            np.testing.assert_array_equal(made, regenerated)
            assert array.dtype == regenerated.dtype and not array.flags.writeable
        assert not np.array_equal(cached[0], mnist1d.generate(1)[0])
    finally:
        mnist1d.generate.cache_clear()


def test_mnist1d_subset_is_a_random_subset_of_the_training_split():
    subset = load(dataset="mnist1d", num_examples=300, num_test=100)
    assert subset.x_train.shape == (300, 40) and subset.x_test.shape == (100, 40)
    assert_standardized(subset.x_train, axes=None)
    raw_train, raw_y_train, _, _ = mnist1d.generate(0)
    stats_ = subset.info["normalization"]
    unstandardized = subset.x_train * stats_["std"][0] + stats_["mean"][0]
    nearest = np.abs(unstandardized[:, None, :] - raw_train[None]).max(axis=2).argmin(axis=1)
    np.testing.assert_allclose(raw_train[nearest], unstandardized, atol=1e-5)  # every row is a training row
    assert len(set(nearest)) == 300 and nearest.max() > 3000  # distinct rows, not just the first ones
    np.testing.assert_array_equal(raw_y_train[nearest], subset.y_train)
    with pytest.raises(ConfigError, match="num_examples=4001"):
        load(dataset="mnist1d", num_examples=4001)


# --------------------------------------------------------------------------------------------- gaussian


def test_gaussian_inputs_are_isotropic_with_norm_one():
    ds = load(dataset="gaussian", num_examples=4000, num_test=500, input_dim=20)
    assert ds.x_train.shape == (4000, 20) and ds.x_test.shape == (500, 20)
    assert_clean_classification(ds, 10)
    x = ds.x_train.astype(np.float64)
    assert np.abs(x.mean(axis=0)).max() < 4 / np.sqrt(4000 * 20)  # 4 standard errors of N(0, 1/d) means
    assert np.abs(20 * x.T @ x / 4000 - np.eye(20)).max() < 0.15  # Cov = I/d, standard error ~ 0.02
    assert np.mean(np.sum(x**2, axis=1)) == pytest.approx(1.0, abs=0.02)


def test_gaussian_seeding():
    keys = dict(dataset="gaussian", labels="teacher", num_examples=200, label_noise=0.2)
    assert_same(load(**keys, data_seed=1), load(**keys, data_seed=1))
    other = load(**keys, data_seed=2)
    assert not np.array_equal(load(**keys, data_seed=1).x_train, other.x_train)
    assert not np.array_equal(load(**keys, data_seed=1).corrupted, other.corrupted)
    np.testing.assert_array_equal(load(**keys, num_test=7).x_train, load(**keys, num_test=9).x_train)


def test_random_labels_uniform_and_independent_of_x():
    num_classes, n = 10, 5000
    ds = load(dataset="gaussian", labels="random", num_examples=n, num_classes=num_classes, data_seed=4)
    assert chi2_uniform(ds.y_train, num_classes) < stats.chi2.isf(P_FAIL, num_classes - 1)
    probe = np.random.default_rng(123).standard_normal((20, num_classes))  # a fixed function of x
    probe_labels = (ds.x_train @ probe).argmax(axis=1)
    table = np.zeros((num_classes, num_classes))
    np.add.at(table, (ds.y_train, probe_labels), 1)
    statistic, _, dof, _ = stats.chi2_contingency(table)
    assert statistic < stats.chi2.isf(P_FAIL, dof)
    assert np.mean(ds.y_train == probe_labels) < 0.15  # chance is 1/K


@pytest.mark.parametrize("teacher_widths", [(), (64,), (32, 16)])
def test_teacher_labels_are_the_teachers_argmax(teacher_widths):
    d, k, seed = 20, 10, 7
    ds = load(dataset="gaussian", labels="teacher", teacher_widths=teacher_widths, num_examples=3000,
              input_dim=d, num_classes=k, data_seed=seed)
    weights = gaussian.teacher_weights(seed, d, teacher_widths, k)
    assert [w.shape for w in weights] == list(zip((d, *teacher_widths), (*teacher_widths, k)))
    q = weights[-1]
    np.testing.assert_allclose(q.T @ q, np.eye(k), atol=1e-12)
    for x, y in [(ds.x_train, ds.y_train), (ds.x_test, ds.y_test)]:
        h = np.sqrt(d) * x.astype(np.float64)
        for w in weights[:-1]:  # phi = standardized ReLU of u = h W_l / sqrt(fan_in), from its definition
            u = h @ w / np.sqrt(w.shape[0])
            h = (np.maximum(u, 0) - 1 / np.sqrt(2 * np.pi)) / np.sqrt(0.5 - 0.5 / np.pi)
        np.testing.assert_array_equal(y, (h @ q).argmax(axis=1))
    if not teacher_widths:  # outputs i.i.d. N(0, 1): classes exactly uniform
        assert chi2_uniform(ds.y_train, k) < stats.chi2.isf(P_FAIL, k - 1)


def test_regression_noise_is_exactly_y_minus_teacher():
    d, n, sigma, seed = 20, 4000, 0.5, 11
    ds = load(dataset="gaussian", task="regression", num_examples=n, input_dim=d, noise_std=sigma, data_seed=seed)
    assert ds.num_classes == 0 and ds.y_train.dtype == ds.noise.dtype == np.float32
    assert not ds.corrupted.any()
    np.testing.assert_array_equal(ds.y_train - ds.clean_y_train, ds.noise)
    (q,) = gaussian.teacher_weights(seed, d, (), 1)
    np.testing.assert_allclose(ds.clean_y_train, np.sqrt(d) * ds.x_train.astype(np.float64) @ q[:, 0], atol=1e-5)
    np.testing.assert_allclose(ds.y_test, np.sqrt(d) * ds.x_test.astype(np.float64) @ q[:, 0], atol=1e-5)
    assert ds.clean_y_train.std() == pytest.approx(1.0, abs=0.05)
    assert ds.noise.std() == pytest.approx(sigma, rel=0.05)
    assert np.abs(np.corrcoef(ds.noise, ds.clean_y_train)[0, 1]) < 4 / np.sqrt(n)


# ------------------------------------------------------------------------------------------ label noise


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.37, 1.0])
def test_corrupt_labels_replaces_exactly_round_fraction(fraction):
    y = np.random.default_rng(0).integers(0, 10, 1001).astype(np.int32)
    y_new, corrupted = map(np.asarray, data.corrupt_labels(y, 10, fraction, 3))
    assert corrupted.sum() == round(fraction * 1001)
    np.testing.assert_array_equal(y_new[~corrupted], y[~corrupted])
    assert y_new.dtype == np.int32 and 0 <= y_new.min() and y_new.max() < 10


def test_corrupt_labels_draws_uniform_classes_and_vmaps_over_keys():
    num_classes, n = 10, 20000
    y = np.zeros(n, np.int32)  # every replaced label that is not 0 changed
    y_new, corrupted = map(np.asarray, data.corrupt_labels(y, num_classes, 0.5, jax.random.key(1)))
    assert chi2_uniform(y_new[corrupted], num_classes) < stats.chi2.isf(P_FAIL, num_classes - 1)
    assert np.mean(y_new[corrupted] == 0) == pytest.approx(1 / num_classes, abs=0.015)  # may keep the class
    by_seed = data.corrupt_labels(y, num_classes, 0.5, 1)
    np.testing.assert_array_equal(by_seed[1], corrupted)
    keys = jax.random.split(jax.random.key(0), 4)
    fractions = np.array([0.1, 0.2, 0.3, 0.4], np.float32)
    _, masks = jax.jit(jax.vmap(lambda k, f: data.corrupt_labels(y, num_classes, f, k)))(keys, fractions)
    np.testing.assert_array_equal(np.asarray(masks).sum(axis=1), np.round(fractions * n))
    assert len({np.asarray(m).tobytes() for m in masks}) == 4


def test_load_applies_label_noise_to_training_labels_only():
    keys = dict(dataset="gaussian", labels="teacher", num_examples=1000, data_seed=2)
    clean, noisy = load(**keys), load(**keys, label_noise=0.25)
    assert noisy.corrupted.sum() == 250 == noisy.info["num_corrupted"]
    np.testing.assert_array_equal(noisy.clean_y_train, clean.y_train)
    np.testing.assert_array_equal(noisy.y_test, clean.y_test)
    np.testing.assert_array_equal(noisy.y_train[~noisy.corrupted], clean.y_train[~noisy.corrupted])
    assert noisy.info["num_changed"] == int((noisy.y_train != clean.y_train).sum()) > 150  # ~ 250 * 9/10
    json.dumps(noisy.info)


# ------------------------------------------------------------------------------------------------- TFDS


@pytest.fixture
def prepared_tfds(monkeypatch):
    """Fake TFDS records (``mock_data``) that count as prepared in ArrayRecord format."""
    monkeypatch.setattr(tfds.core.DatasetBuilder, "is_prepared", lambda self: True)
    monkeypatch.setattr(tfds.core.DatasetInfo, "available_file_formats",
                        lambda self: {tfds.core.file_adapters.FileFormat.ARRAY_RECORD})
    with tfds.testing.mock_data(num_examples=48):
        yield


@pytest.mark.parametrize("name,shape,num_classes", [
    ("mnist", (28, 28, 1), 10), ("fashion_mnist", (28, 28, 1), 10),
    ("cifar10", (32, 32, 3), 10), ("cifar100", (32, 32, 3), 100),
])
def test_tfds_arrays_are_standardized_per_channel(prepared_tfds, name, shape, num_classes):
    ds = load(dataset=name, num_test=20)
    assert ds.x_train.shape == (48, *shape) and ds.x_test.shape == (20, *shape)
    assert_clean_classification(ds, num_classes)
    assert_standardized(ds.x_train, axes=(0, 1, 2))
    stats_ = ds.info["normalization"]
    assert len(stats_["mean"]) == len(stats_["std"]) == shape[-1]
    pixels = (ds.x_test * np.array(stats_["std"]) + np.array(stats_["mean"])) * 255  # undo: integers in [0, 255]
    np.testing.assert_allclose(pixels, np.round(pixels), atol=1e-3)
    assert pixels.min() > -1e-3 and pixels.max() < 255 + 1e-3
    assert load(dataset=name, num_examples=16).x_train.shape == (16, *shape)


def test_unprepared_tfds_dataset_raises_the_prepare_command_and_downloads_nothing(tmp_path, monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_download)
    with pytest.raises(ConfigError) as error:
        load(dataset="fashion_mnist", data_dir=str(tmp_path))
    message = str(error.value)
    assert "\n" not in message
    assert tfds_source.prepare_command("fashion_mnist", tmp_path) in message
    assert "tfds build fashion_mnist --file_format=array_record" in message and str(tmp_path) in message
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------- errors


def test_unknown_dataset_lists_the_datasets():
    with pytest.raises(ConfigError, match="dataset='imagenet'") as error:
        load(dataset="imagenet")
    assert all(name in str(error.value) for name in data.DATASETS)


@pytest.mark.parametrize("keys,match", [
    (dict(dataset="gaussian", labels="teachers"), "labels='teachers'.*'random', 'teacher'"),
    (dict(dataset="gaussian", task="ranking"), "task='ranking'.*'classification', 'regression'"),
    (dict(dataset="gaussian", labels="teacher", input_dim=5), "input_dim=5"),
    (dict(dataset="gaussian", label_noise=1.5), "label_noise=1.5"),
    (dict(dataset="gaussian", task="regression", label_noise=0.1), "label_noise=0.1"),
    (dict(dataset="mnist1d", task="regression"), "task='regression'"),
    (dict(dataset="gaussian", data_seed=-1), "data_seed=-1"),
])
def test_bad_config_values_raise_config_error(keys, match):
    with pytest.raises(ConfigError, match=match):
        load(**keys)


def test_tfds_reads_the_default_data_dir_when_none_is_given(tmp_path, monkeypatch):
    """data_dir "" (the config default) means TFDS's default directory, pointed here at ``tmp_path`` the way
    ``$TFDS_DATA_DIR`` points it: CIFAR-10's metadata prepared there (ArrayRecord format) is found, and read
    through the builder's data source (its records faked: writing ArrayRecord files needs TensorFlow)."""
    monkeypatch.setattr(tfds.core.constants, "DATA_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match=f"under data_dir='{tmp_path}'"):  # nothing prepared there yet
        load(dataset="cifar10", data_dir="")
    builder = tfds.builder("cifar10", data_dir=str(tmp_path), file_format="array_record")
    os.makedirs(builder.data_dir)
    builder.info.write_to_directory(builder.data_dir)
    rng = np.random.default_rng(0)
    records = [{"image": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), "label": i % 10} for i in range(12)]
    monkeypatch.setattr(tfds.core.DatasetBuilder, "as_data_source", lambda self, split: records)
    ds = load(dataset="cifar10", data_dir="")
    assert ds.info["data_dir"] == str(tmp_path) and ds.x_train.shape == (12, 32, 32, 3)
