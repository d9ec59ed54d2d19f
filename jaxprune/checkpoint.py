"""Run checkpoints with orbax: the whole per-seed state pytree, the metrics so far and, mid-round, the round in
flight; resume exactly.

A checkpoint holds everything the next round reads — params, masks, rewind point, survival counts, optimizer
state where present, PRNG keys, round counter and failure markers — so a resumed run executes the same compiled
programs on the same inputs as an uninterrupted one and produces bit-identical outputs on the same machine.
The data-order position is the step count itself: step t of round r trains on batch t mod b of epoch ⌊t/b⌋ in
the order drawn from ``fold_in(fold_in(key, r), ⌊t/b⌋)`` (:func:`jaxprune.train.train_steps`).

orbax writes each checkpoint into a temporary directory and renames it when complete, so a process killed
mid-write leaves no checkpoint that :meth:`RoundCheckpointer.latest` would return. Typed PRNG keys are stored
as their raw ``key_data`` and re-wrapped on restore. Every process calls save/restore (multi-host safe).
"""
from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from jaxprune.parallel import is_key
from jaxprune.workdir import to_jsonable

PyTree = Any


def _unwrap_keys(tree: PyTree) -> PyTree:
    return jax.tree.map(lambda x: jax.random.key_data(x) if is_key(x) else x, tree)


def _rewrap_keys(tree: PyTree, like: PyTree) -> PyTree:
    return jax.tree.map(lambda x, ref: jax.random.wrap_key_data(x, impl=jax.random.key_impl(ref)) if is_key(ref)
                        else x, tree, like)


class RoundCheckpointer:
    """Keeps the latest ``max_to_keep`` checkpoints of a run under ``directory``, numbered by the caller (IRP: the
    training steps done so far, so round ends and mid-round checkpoints share one increasing count)."""

    def __init__(self, directory: str, max_to_keep: int = 2):
        self.manager = ocp.CheckpointManager(
            os.path.abspath(directory),
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                                 enable_async_checkpointing=False),
        )

    def latest(self) -> int | None:
        """The number of the newest complete checkpoint, or None."""
        return self.manager.latest_step()

    def save(self, number: int, state: PyTree, history: list[dict], progress: PyTree = None) -> None:
        """Checkpoint ``state`` (any pytree of arrays), the JSON-able per-round ``history`` and, mid-round, the
        ``progress`` pytree of the round in flight; blocks until written."""
        items = {
            "state": ocp.args.StandardSave(_unwrap_keys(state)),
            "history": ocp.args.JsonSave({"rounds": to_jsonable(history)}),  # NaN -> null -> NaN on restore
        }
        if progress is not None:
            items["progress"] = ocp.args.StandardSave(_unwrap_keys(progress))
        self.manager.save(number, args=ocp.args.Composite(**items))
        self.manager.wait_until_finished()

    def restore(self, number: int, like: PyTree, progress_like: PyTree = None) -> tuple[PyTree, list[dict], PyTree]:
        """(state, history, progress) of checkpoint ``number``, the arrays shaped, typed and sharded like ``like``
        and ``progress_like``; progress is None unless ``progress_like`` is given (a mid-round checkpoint)."""
        abstract = lambda tree: jax.tree.map(ocp.utils.to_shape_dtype_struct, _unwrap_keys(tree))  # noqa: E731
        items = {"state": ocp.args.StandardRestore(abstract(like)), "history": ocp.args.JsonRestore()}
        if progress_like is not None:
            items["progress"] = ocp.args.StandardRestore(abstract(progress_like))
        restored = self.manager.restore(number, args=ocp.args.Composite(**items))
        progress = _rewrap_keys(restored["progress"], progress_like) if progress_like is not None else None
        return _rewrap_keys(restored["state"], like), restored["history"]["rounds"], progress

    def close(self) -> None:
        self.manager.close()
