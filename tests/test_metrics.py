"""Live metrics: metrics.jsonl lines as write_jsonl writes them, truncate-then-continue byte-identical to an
uninterrupted run, TensorBoard event files read back by TensorBoard's own reader; and the parameter overview."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from jaxprune import masks, metrics, parameter_overview
from jaxprune import workdir as wd
from jaxprune.errors import ConfigError

# Three "rounds" of records, one per seed, with the values a run writes (NumPy scalars, arrays, NaN).
ROUNDS = [[{"round": r, "seed": s, "test_accuracy": np.float32(0.5 + 0.1 * r - 0.01 * s),
            "epoch_loss": np.arange(3.0) / (r + 1), "note": float("nan") if s == 1 else s} for s in range(2)]
          for r in range(3)]


def scalars(workdir, run: str, tag: str) -> list[tuple[int, float]]:
    events = EventAccumulator(os.path.join(workdir, "tensorboard", run))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_append_writes_flushed_lines_as_write_jsonl_writes_them(tmp_path):
    writer = metrics.MetricsWriter(str(tmp_path), num_seeds=2)
    for r, records in enumerate(ROUNDS):
        writer.append(records)
        lines = open(tmp_path / "metrics.jsonl").read().splitlines()  # readable before close: flushed
        assert len(lines) == writer.num_lines == 2 * (r + 1)
        assert json.loads(lines[-1])["round"] == r
    wd.write_jsonl(str(tmp_path / "at_once.jsonl"), [x for records in ROUNDS for x in records])
    assert (tmp_path / "metrics.jsonl").read_bytes() == (tmp_path / "at_once.jsonl").read_bytes()


def test_truncate_to_the_checkpoint_then_continue_is_byte_identical_to_an_uninterrupted_run(tmp_path):
    uninterrupted, killed = tmp_path / "a", tmp_path / "b"
    uninterrupted.mkdir(), killed.mkdir()
    writer = metrics.MetricsWriter(str(uninterrupted), num_seeds=2)
    for records in ROUNDS:
        writer.append(records)
    first = metrics.MetricsWriter(str(killed), num_seeds=2)
    first.append(ROUNDS[0])
    checkpointed = first.num_lines  # a checkpoint after round 0 ...
    first.append(ROUNDS[1])  # ... round 1 written but not checkpointed, then killed inside a write:
    with open(killed / "metrics.jsonl", "a") as f:
        f.write(wd.json_line(ROUNDS[2][0])[:20])
    resumed = metrics.MetricsWriter(str(killed), num_seeds=2)  # a new process
    resumed.truncate(checkpointed)
    assert resumed.num_lines == checkpointed
    for records in ROUNDS[1:]:
        resumed.append(records)
    assert (killed / "metrics.jsonl").read_bytes() == (uninterrupted / "metrics.jsonl").read_bytes()


def test_truncate_to_zero_and_beyond_the_file(tmp_path):
    writer = metrics.MetricsWriter(str(tmp_path), num_seeds=2)
    writer.truncate(0)  # no file yet: nothing to cut
    writer.append(ROUNDS[0])
    with pytest.raises(ConfigError, match="holds 2 complete lines, the checkpoint covers 3"):
        metrics.MetricsWriter(str(tmp_path), num_seeds=2).truncate(3)
    metrics.MetricsWriter(str(tmp_path), num_seeds=2).truncate(0)
    assert (tmp_path / "metrics.jsonl").read_bytes() == b""


def test_scalars_go_to_one_run_per_seed_and_the_finite_mean(tmp_path):
    values = {0: [0.1, 0.2, 0.6], 1: [0.3, np.nan, 0.9], 2: [np.inf, np.nan, -np.inf]}
    with metrics.MetricsWriter(str(tmp_path), num_seeds=3) as writer:
        for step, v in values.items():
            writer.scalars(step, {"test_accuracy": np.asarray(v), "density": [1.0 / (step + 1)] * 3})
    assert sorted(os.listdir(tmp_path / "tensorboard")) == ["mean", "seed_0", "seed_1", "seed_2"]
    for seed in range(3):
        got = scalars(tmp_path, f"seed_{seed}", "test_accuracy")
        np.testing.assert_array_equal([s for s, _ in got], [0, 1, 2])
        np.testing.assert_allclose([x for _, x in got], [values[step][seed] for step in range(3)], rtol=1e-6)
    mean = [x for _, x in scalars(tmp_path, "mean", "test_accuracy")]
    np.testing.assert_allclose(mean[:2], [0.3, 0.6], rtol=1e-6)
    assert np.isnan(mean[2])  # no finite seed
    np.testing.assert_allclose([x for _, x in scalars(tmp_path, "mean", "density")], [1, 1 / 2, 1 / 3], rtol=1e-6)


def test_a_restart_marker_makes_tensorboard_drop_the_steps_written_after_the_checkpoint(tmp_path):
    with metrics.MetricsWriter(str(tmp_path), num_seeds=1) as before_kill:
        for step in range(5):
            before_kill.scalars(step, {"loss": [float(step)]})
    with metrics.MetricsWriter(str(tmp_path), num_seeds=1) as resumed:  # the checkpoint covered steps 0..3
        resumed.truncate(0, step=4)  # (without the marker, step 4 would appear twice: it does not go backwards)
        for step in (4, 5):
            resumed.scalars(step, {"loss": [10.0 + step]})
    assert scalars(tmp_path, "seed_0", "loss") == [(0, 0.0), (1, 1.0), (2, 2.0), (3, 3.0), (4, 14.0), (5, 15.0)]


def test_seed_runs_sort_by_seed_and_values_must_be_one_per_seed(tmp_path):
    writer = metrics.MetricsWriter(str(tmp_path), num_seeds=12)
    assert [writer.seed_run(s) for s in (0, 9, 11)] == ["seed_00", "seed_09", "seed_11"]
    with pytest.raises(ValueError, match="'loss' has 3 values, expected one per seed"):
        writer.scalars(0, {"loss": [1.0, 2.0, 3.0]})


def test_only_the_primary_process_writes_but_every_process_counts_lines(tmp_path, monkeypatch):
    monkeypatch.setattr(metrics.parallel, "is_primary", lambda: False)
    writer = metrics.MetricsWriter(str(tmp_path), num_seeds=2)
    writer.append(ROUNDS[0])
    writer.scalars(0, {"loss": [1.0, 2.0]})
    writer.truncate(1, step=0)
    assert writer.num_lines == 1 and os.listdir(tmp_path) == []


def test_parameter_overview_lists_prunable_layers_with_counts_and_mask_densities():
    params = {"Conv_0": {"kernel": jnp.ones((3, 3, 2, 4)), "bias": jnp.ones(4)},
              "Dense_0": {"kernel": jnp.ones((8, 5))}}
    ranks = jax.tree.map(lambda p: jnp.arange(p.size, dtype=jnp.float32).reshape(p.shape), params)
    mask = masks.from_scores(ranks, params, sparsity=0.75)
    rows = parameter_overview.rows(params, mask)
    assert [(r["path"], r["shape"], r["count"]) for r in rows] == [("Conv_0/kernel", (3, 3, 2, 4), 72),
                                                                   ("Dense_0/kernel", (8, 5), 40)]
    expected = masks.layer_density(mask, params)
    np.testing.assert_allclose([r["density"] for r in rows], [expected[r["path"]] for r in rows])
    text = parameter_overview.table(params, mask).splitlines()
    assert text[0].split() == ["layer", "shape", "weights", "density"] and len(text) == 5
    assert text[-1].split() == ["total", "112", f"{float(masks.density(mask, params)):.4f}"]
    assert text[1].split()[0] == "Conv_0/kernel" and text[1].split()[-2:] == ["72", f"{rows[0]['density']:.4f}"]
    stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), mask, masks.ones(params))  # two seeds: mean density
    np.testing.assert_allclose([r["density"] for r in parameter_overview.rows(params, stacked)],
                               [(r["density"] + 1) / 2 for r in rows])
    assert "density" not in parameter_overview.table(params)


def test_irp_appends_each_round_as_it_ends_and_tensorboard_holds_every_seed_and_the_mean(tmp_path):
    """The IRP job's metrics.jsonl grows round by round (counted when each round's progress line is logged), and
    TensorBoard's reader gets back each seed's and the mean test accuracy of every round."""
    from configs import irp as irp_config
    from jaxprune import irp
    from jaxprune.experiments import common
    from jaxprune.experiments import irp as irp_experiment

    config = irp_config.get_config()
    config.update(dict(dataset="gaussian", labels="teacher", num_examples=128, num_test=64, input_dim=8,
                       num_classes=3, widths=(16,), num_seeds=2, epochs=1, batch_size=32, rounds=3))
    setup = common.setup(config)
    lines_seen = []

    def log(message):
        if message.startswith("round"):
            lines_seen.append(sum(1 for _ in open(tmp_path / "metrics.jsonl")))

    with metrics.MetricsWriter(str(tmp_path), config.num_seeds) as writer:
        _, history, _ = irp_experiment.run_rounds(config, setup, irp.schedule(config.prune_fraction, config.rounds),
                                                  log, writer=writer)
    per_round = len(irp_experiment.round_records(0, history[0]))
    assert lines_seen == [per_round, 2 * per_round, 3 * per_round]
    for s in range(config.num_seeds):
        got = scalars(str(tmp_path), writer.seed_run(s), "test_accuracy")
        np.testing.assert_allclose([v for _, v in got], [m["test_accuracy"][s] for m in history], rtol=1e-6)
        assert [step for step, _ in got] == [1, 2, 3]
    mean = [v for _, v in scalars(str(tmp_path), "mean", "test_accuracy")]
    np.testing.assert_allclose(mean, [np.mean(m["test_accuracy"]) for m in history], rtol=1e-6)


def test_result_rows_go_to_tensorboard_against_sparsity_and_a_fresh_writer_forgets_a_killed_run(tmp_path):
    """What every experiment but IRP streams: rows as ``<key>/<method>`` at step 1000·sparsity (per seed and their
    mean), one-value estimates to ``mean`` only; a rerun's :func:`metrics.fresh` empties metrics.jsonl."""
    writer = metrics.fresh(str(tmp_path), num_seeds=2)
    writer.append(ROUNDS[0])
    writer.rows([{"method": "snip", "sparsity": 0.9, "acc": [0.5, 0.7]},
                 {"method": "snip", "sparsity": 0.98, "acc": [0.25, 0.75]}], ("acc",))
    writer.sweep_scalars(3, {"draws/imp/bits": 4.5})
    writer.close()
    assert scalars(tmp_path, "seed_1", "acc/snip") == [(900, pytest.approx(0.7)), (980, 0.75)]
    assert scalars(tmp_path, "mean", "acc/snip") == [(900, pytest.approx(0.6)), (980, 0.5)]
    assert scalars(tmp_path, "mean", "draws/imp/bits") == [(3, 4.5)]
    assert "draws/imp/bits" not in EventAccumulator(str(tmp_path / "tensorboard" / "seed_0")).Reload().Tags()["scalars"]
    metrics.fresh(str(tmp_path), num_seeds=2).close()
    assert (tmp_path / "metrics.jsonl").read_bytes() == b""
