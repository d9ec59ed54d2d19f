"""Iterative rewind pruning (IRP; iterative magnitude pruning with rewinding) and survival counts.

One round, for one seed, with mask m_r (density d_r = (1 − f)^r, f = ``prune_fraction``):

1. rewind: θ ← θ_rewind ⊙ m_r, fresh optimizer state (θ_rewind = θ_0, or θ_k for ``rewind_step`` = k > 0,
   captured during round 0's training);
2. train ``epochs`` epochs with the mask held fixed (pruned weights stay exactly 0);
3. prune: m_{r+1} = top-k of |θ_trained| among the surviving prunable weights, k = round(d_{r+1} · n)
   (``global`` scope) or per layer (``layerwise``), so the density after r rounds is (1 − f)^r up to rounding
   of k, with no compounding of rounding errors across rounds;
4. survival ← survival + m_{r+1}.

After R rounds, survival[w] ∈ {0, …, R} is the number of rounds weight w survived — AutoSparse's target.
A weight pruned in round r has survival r, so survival ≥ r ⇔ w ∈ m_r: the count encodes the whole mask
history. The whole round state is one pytree (:class:`IRPState`) with the seed axis leading when vmapped,
so rounds can be checkpointed and the seed axis sharded without rewriting anything here.
"""
from __future__ import annotations

import math
from typing import Any

import flax
import jax
import jax.numpy as jnp

from jaxprune import masks, train

PyTree = Any


@flax.struct.dataclass
class IRPState:
    """Everything one seed's IRP run carries from one round to the next."""

    rewind_params: PyTree  # values survivors are reset to at the start of every round
    rewind_batch_stats: PyTree
    mask: PyTree  # bool, like params; non-prunable leaves all True
    survival: PyTree  # int32, like params: rounds survived so far
    key: jax.Array  # data-order key; round r trains with fold_in(key, r)
    round: jax.Array  # number of completed rounds
    failed_round: jax.Array  # first round with a non-finite loss, -1 if none
    failed_step: jax.Array  # step within that round, -1 if none


def init(params: PyTree, batch_stats: PyTree, key: jax.Array) -> IRPState:
    """State before round 0: dense mask, zero survival counts, rewind point = initialization."""
    minus_one = jnp.full((), -1, jnp.int32)
    return IRPState(
        rewind_params=params,
        rewind_batch_stats=batch_stats,
        mask=masks.ones(params),
        survival=jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), jnp.int32), params),
        key=key,
        round=jnp.zeros((), jnp.int32),
        failed_round=minus_one,
        failed_step=minus_one,
    )


def density_after(rounds, prune_fraction: float):
    """Target density after ``rounds`` rounds: (1 − prune_fraction)^rounds."""
    return (1.0 - prune_fraction) ** rounds


def schedule(prune_fraction: float, rounds: int = 0, targets=()) -> list[float]:
    """Densities reached after each round, decreasing.

    Without ``targets``: (1 − f)^1, …, (1 − f)^rounds. With target densities (1 − sparsity for the sparsities an
    experiment compares at): the geometric steps (1 − f)^k above the smallest target, merged with every target
    below 1, so an IMP run passes through each target exactly and stops at the smallest.
    """
    if not targets:
        return [density_after(r, prune_fraction) for r in range(1, rounds + 1)]
    lowest = min(targets)
    steps = math.ceil(math.log(lowest) / math.log(1.0 - prune_fraction))
    geometric = {density_after(k, prune_fraction) for k in range(1, steps)} - {1.0}
    return sorted({d for d in geometric if d > lowest} | {float(t) for t in targets if t < 1.0}, reverse=True)


def magnitude_prune(params: PyTree, mask: PyTree, density, scope: masks.Scope = "global") -> PyTree:
    """Keep the largest-|θ| surviving prunable weights at ``density`` of all prunable weights."""
    scores = masks.restrict(jax.tree.map(jnp.abs, params), mask)
    return masks.from_scores(scores, params, 1.0 - density, scope)


def round_step(
    state: IRPState,
    train_data: train.Data,
    test_data: train.Data,
    next_density,
    *,
    model,
    tx,
    epochs: int,
    batch_size: int,
    scope: masks.Scope = "global",
    capture_step: int | None = None,
) -> tuple[IRPState, dict]:
    """One IRP round (rewind → train → evaluate → prune to ``next_density``) for one seed.

    ``next_density`` is the fraction of prunable weights kept after this round's pruning — (1 − f)^(r+1) for
    plain IRP, see :func:`schedule` — and may be traced, so one compiled round serves every round.
    ``capture_step`` (round 0 only) makes the rewind point the weights after that many steps of this
    round's training instead of the initialization. Returns the new state and this round's metrics: the
    density trained at, per-epoch train loss/accuracy, and test loss/accuracy of the trained sparse net.
    """
    params = masks.apply(state.rewind_params, state.mask)
    start = train.init_state(params, state.rewind_batch_stats, tx)
    trained, epoch_metrics, captured = train.train(
        start, state.mask, train_data, jax.random.fold_in(state.key, state.round), model=model, tx=tx,
        epochs=epochs, batch_size=batch_size, capture_step=capture_step,
    )
    test = train.evaluate(trained.params, trained.batch_stats, test_data, model=model)
    new_mask = magnitude_prune(trained.params, state.mask, next_density, scope)
    rewind_params, rewind_batch_stats = captured if captured is not None else (
        state.rewind_params, state.rewind_batch_stats)
    newly_failed = (state.failed_round < 0) & (trained.failed_step >= 0)
    new_state = IRPState(
        rewind_params=rewind_params,
        rewind_batch_stats=rewind_batch_stats,
        mask=new_mask,
        survival=jax.tree.map(lambda s, m: s + m.astype(jnp.int32), state.survival, new_mask),
        key=state.key,
        round=state.round + 1,
        failed_round=jnp.where(newly_failed, state.round, state.failed_round),
        failed_step=jnp.where(newly_failed, trained.failed_step, state.failed_step),
    )
    metrics = {
        "density": masks.density(state.mask, params),
        "train_loss": epoch_metrics["loss"],
        "train_accuracy": epoch_metrics["accuracy"],
        "test_loss": test["loss"],
        "test_accuracy": test["accuracy"],
    }
    return new_state, metrics
