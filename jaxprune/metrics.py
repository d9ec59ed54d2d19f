"""Live metrics of a run: ``metrics.jsonl`` lines appended as they are produced, the same scalars in TensorBoard.

A :class:`MetricsWriter` appends each record to ``workdir/metrics.jsonl`` at once (one JSON object per line,
flushed, encoded as :func:`jaxprune.workdir.write_jsonl` encodes it), so ``tail -f`` shows a run as it goes.
Crash safety is by line count: a checkpoint stores :attr:`MetricsWriter.num_lines`, and a resumed run first calls
:meth:`MetricsWriter.truncate` with it (0 without a checkpoint), which cuts away what was written after that
checkpoint (a partial last line included); the lines written from then on are the ones the uninterrupted run
writes, so the final file is byte-identical to it.

:meth:`MetricsWriter.scalars` writes per-seed values to TensorBoard event files under ``workdir/tensorboard``,
one run per seed (``seed_00``, ``seed_01``, …) plus ``mean`` (the mean over the seeds' finite values), so
``tensorboard --logdir runs`` shows a sweep. The event files are written by TensorBoard's own writer
(``tensorboard.summary.writer``), which needs no TensorFlow. Event files hold wall times, so they are not
byte-reproducible; after a resume ``truncate(..., step=s)`` marks a restart at step ``s`` in every run, and
TensorBoard's reader drops the events at steps >= s written before it (``purge_orphaned_data``).

Every experiment writes through it: IRP per round (with the truncate-on-resume above); the experiments that
recompute everything on a rerun start from :func:`fresh` and write their result rows with
:meth:`MetricsWriter.rows` (tag ``<metric>/<method>`` at step :func:`sparsity_step`).

Only the primary process (:func:`jaxprune.parallel.is_primary`) writes; every process counts the lines, so
``num_lines`` is the same everywhere.
"""
from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterable, Mapping

import numpy as np

from jaxprune import parallel
from jaxprune import workdir as wd
from jaxprune.errors import ConfigError

TENSORBOARD = "tensorboard"
MEAN_RUN = "mean"


def sparsity_step(sparsity: float) -> int:
    """The TensorBoard step of a result at ``sparsity``: the sparsity in per mille (0.9 → 900)."""
    return round(1000 * float(sparsity))


def fresh(workdir: str, num_seeds: int) -> MetricsWriter:
    """A writer for a run that recomputes everything on a rerun: metrics.jsonl emptied and every TensorBoard run on
    disk marked restarted at step 0, so what a killed run streamed is neither kept nor shown twice."""
    writer = MetricsWriter(workdir, num_seeds)
    writer.truncate(0, step=0)
    return writer


class MetricsWriter:
    """Appends to ``workdir/metrics.jsonl`` and mirrors scalars to ``workdir/tensorboard/<run>`` (module docstring).

    ``num_seeds`` fixes the per-seed runs. Use as a context manager, or call :meth:`close` at the end.
    """

    def __init__(self, workdir: str, num_seeds: int):
        self.path = os.path.join(workdir, wd.METRICS)
        self.tensorboard_dir = os.path.join(workdir, TENSORBOARD)
        self.num_seeds = num_seeds
        self.num_lines = 0  # lines written (or kept by truncate): what a checkpoint records
        self._primary = parallel.is_primary()
        self._event_writers = {}

    def append(self, records: Iterable[dict]) -> None:
        """Append one JSON line per record and flush."""
        lines = [wd.json_line(record) for record in records]
        if self._primary and lines:
            with open(self.path, "a") as f:
                f.write("".join(lines))
        self.num_lines += len(lines)

    def truncate(self, num_lines: int, step: int | None = None) -> None:
        """Keep the first ``num_lines`` complete lines of metrics.jsonl (ConfigError if it has fewer); with ``step``,
        also mark a restart at ``step`` in every TensorBoard run already on disk."""
        if self._primary:
            data = open(self.path, "rb").read() if os.path.exists(self.path) else b""
            ends = np.flatnonzero(np.frombuffer(data, np.uint8) == ord("\n")) + 1  # just past each newline
            if len(ends) < num_lines:
                raise ConfigError(f"{self.path}: holds {len(ends)} complete lines, the checkpoint covers {num_lines}; "
                                  "rerun with --config.overwrite=True")
            if data:
                os.truncate(self.path, int(ends[num_lines - 1]) if num_lines else 0)
            if step is not None and os.path.isdir(self.tensorboard_dir):
                for run in sorted(os.listdir(self.tensorboard_dir)):
                    self._restart(run, step)
        self.num_lines = num_lines

    def scalars(self, step: int, values: Mapping[str, Iterable[float]]) -> None:
        """``values[tag]`` holds one value per seed: each goes to its seed's run, their finite mean to ``mean``."""
        per_seed = {tag: np.asarray(v, dtype=np.float64).reshape(-1) for tag, v in values.items()}
        for tag, v in per_seed.items():
            if v.shape != (self.num_seeds,):
                raise ValueError(f"scalars: {tag!r} has {v.size} values, expected one per seed ({self.num_seeds})")
        if not self._primary:
            return
        for seed in range(self.num_seeds):
            self._write(self.seed_run(seed), step, {tag: v[seed] for tag, v in per_seed.items()})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all seeds non-finite: the mean is NaN
            means = {tag: np.nanmean(np.where(np.isfinite(v), v, np.nan)) for tag, v in per_seed.items()}
        self._write(MEAN_RUN, step, means)

    def sweep_scalars(self, step: int, values: Mapping[str, float]) -> None:
        """One value per tag for the whole sweep (e.g. an estimate over all seeds): to the ``mean`` run only."""
        if self._primary:
            self._write(MEAN_RUN, step, values)

    def rows(self, rows: Iterable[dict], keys: Iterable[str]) -> None:
        """TensorBoard scalars of an experiment's result rows ``{"method", "sparsity", key: per-seed values}``: tag
        ``<key>/<method>`` at step :func:`sparsity_step` of the row, so each method's curve runs over sparsity."""
        for r in rows:
            self.scalars(sparsity_step(r["sparsity"]), {f"{k}/{r['method']}": r[k] for k in keys})

    def seed_run(self, seed: int) -> str:
        """The TensorBoard run name of ``seed``, zero-padded so runs sort by seed."""
        return f"seed_{seed:0{len(str(self.num_seeds - 1))}d}"

    def close(self) -> None:
        for writer in self._event_writers.values():
            writer.close()
        self._event_writers = {}

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _event_writer(self, run: str):
        if run not in self._event_writers:
            from tensorboard.summary.writer.event_file_writer import EventFileWriter  # 0.6 s to import: on first use

            self._event_writers[run] = EventFileWriter(os.path.join(self.tensorboard_dir, run))
        return self._event_writers[run]

    def _add(self, run: str, event) -> None:
        writer = self._event_writer(run)
        writer.add_event(event)
        writer.flush()

    def _write(self, run: str, step: int, values: Mapping[str, float]) -> None:
        from tensorboard.compat.proto import event_pb2, summary_pb2

        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=float(value))
                                             for tag, value in values.items()])
        self._add(run, event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

    def _restart(self, run: str, step: int) -> None:
        from tensorboard.compat.proto import event_pb2

        start = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
        self._add(run, event_pb2.Event(wall_time=time.time(), step=int(step), session_log=start))
