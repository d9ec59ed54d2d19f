"""Round checkpoints with orbax: save the whole per-seed state pytree and the metrics so far; resume exactly.

A checkpoint holds everything the next round reads — params, masks, rewind point, survival counts, optimizer
state where present, PRNG keys, round counter and failure markers — so a resumed run executes the same compiled
programs on the same inputs as an uninterrupted one and produces bit-identical outputs on the same machine.
The data order needs no saved position: round r, epoch e trains with ``fold_in(fold_in(key, r), e)``.

orbax writes each checkpoint into a temporary directory and renames it when complete, so a process killed
mid-write leaves no checkpoint that :meth:`RoundCheckpointer.latest` would return. Typed PRNG keys are stored
as their raw ``key_data`` and re-wrapped on restore. Every process calls save/restore (multi-host safe).
"""
from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from jaxprune.workdir import to_jsonable

PyTree = Any


def _is_key(x) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _unwrap_keys(tree: PyTree) -> PyTree:
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _rewrap_keys(tree: PyTree, like: PyTree) -> PyTree:
    return jax.tree.map(lambda x, ref: jax.random.wrap_key_data(x, impl=jax.random.key_impl(ref)) if _is_key(ref)
                        else x, tree, like)


class RoundCheckpointer:
    """Keeps the latest ``max_to_keep`` round checkpoints under ``directory`` (step number = rounds completed)."""

    def __init__(self, directory: str, max_to_keep: int = 2):
        self.manager = ocp.CheckpointManager(
            os.path.abspath(directory),
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                                 enable_async_checkpointing=False),
        )

    def latest(self) -> int | None:
        """Rounds completed by the newest complete checkpoint, or None."""
        return self.manager.latest_step()

    def save(self, rounds_done: int, state: PyTree, history: list[dict]) -> None:
        """Checkpoint ``state`` (any pytree of arrays) and the JSON-able per-round ``history``; blocks until written."""
        self.manager.save(rounds_done, args=ocp.args.Composite(
            state=ocp.args.StandardSave(_unwrap_keys(state)),
            history=ocp.args.JsonSave({"rounds": to_jsonable(history)}),  # NaN -> null -> NaN on restore
        ))
        self.manager.wait_until_finished()

    def restore(self, rounds_done: int, like: PyTree) -> tuple[PyTree, list[dict]]:
        """The state saved after ``rounds_done`` rounds, shaped, typed and sharded like ``like``, and its history."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _unwrap_keys(like))
        restored = self.manager.restore(rounds_done, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), history=ocp.args.JsonRestore(),
        ))
        return _rewrap_keys(restored["state"], like), restored["history"]["rounds"]

    def close(self) -> None:
        self.manager.close()
