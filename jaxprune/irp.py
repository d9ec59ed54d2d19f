"""Iterative rewind pruning (IRP; iterative magnitude pruning with rewinding) and survival counts.

One round, for one seed, with mask m_r (density d_r = (1 − f)^r, f = ``prune_fraction``):

1. rewind: θ ← θ_rewind ⊙ m_r, fresh optimizer state (θ_rewind = θ_0, or θ_k for ``rewind_step`` = k > 0,
   captured during round 0's training);
2. train ``epochs`` epochs with the mask held fixed (pruned weights stay exactly 0);
3. prune: m_{r+1} = top-k of |θ_trained| among the surviving prunable weights, k = round(d_{r+1} · n)
   (``global`` scope) or per layer (``layerwise``), so the density after r rounds is (1 − f)^r up to rounding
   of k, with no compounding of rounding errors across rounds. Option (``criterion='snip'``, the AutoSparse
   reference's main dataset): top-k of SNIP's |θ_T ⊙ ∂L/∂θ(θ_T)| on the trained weights (eval mode) and one
   batch of the training set (:func:`criterion_scores`);
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

from jaxprune import masks, pai, train

PyTree = Any
CRITERIA = ("magnitude", "snip")  # what a round prunes by (step 3): |θ_trained| or SNIP on the trained weights
SCHEDULES = ("geometric", "linear")
CRITERION_STREAM = 1  # SNIP criterion batch of a round: permutation by fold_in(round_key(state), CRITERION_STREAM)


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


def schedule(prune_fraction: float, rounds: int = 0, targets=(), kind: str = "geometric") -> list[float]:
    """Densities reached after each round, decreasing.

    Without ``targets``: (1 − f)^1, …, (1 − f)^rounds; ``kind='linear'`` reaches the same final density
    d_R = (1 − f)^R in equal shares of the ORIGINAL weights, d_r = 1 − r (1 − d_R) / R (the AutoSparse reference's
    schedule: 20 rounds of 4.95% to 1%). With target densities (1 − sparsity for the sparsities an
    experiment compares at): the geometric steps (1 − f)^k above the smallest target, merged with every target
    below 1, so an IMP run passes through each target exactly and stops at the smallest. A step within a relative
    1e-4 of a target IS that target (a target written as 1 − sparsity, e.g. on the 1 − 0.8^r grid, differs from
    0.8^r by rounding only), so no round repeats the one before it.
    """
    if not targets and kind == "linear":
        return [1.0 - r * (1.0 - density_after(rounds, prune_fraction)) / rounds for r in range(1, rounds + 1)]
    if not targets:
        return [density_after(r, prune_fraction) for r in range(1, rounds + 1)]
    lowest = min(targets)
    steps = math.ceil(math.log(lowest) / math.log(1.0 - prune_fraction))
    geometric = {density_after(k, prune_fraction) for k in range(1, steps)} - {1.0}
    distinct = {d for d in geometric if d > lowest and all(abs(d - t) > 1e-4 * t for t in targets)}
    return sorted(distinct | {float(t) for t in targets if t < 1.0}, reverse=True)


def magnitude_prune(params: PyTree, mask: PyTree, density, scope: masks.Scope = "global") -> PyTree:
    """Keep the largest-|θ| surviving prunable weights at ``density`` of all prunable weights."""
    return masks.largest_magnitude(params, 1.0 - density, scope, within=mask)


@flax.struct.dataclass
class RoundProgress:
    """One seed's round in flight: enough to continue it from any step (what a mid-round checkpoint holds)."""

    train: train.TrainState  # train.step = steps of this round done so far
    captured: PyTree  # (params, batch_stats) the next rounds rewind to: the rewind point, or the capture
    step_metrics: dict  # per-step loss and accuracy [steps of the round], filled up to train.step


def round_key(state: IRPState) -> jax.Array:
    """The data-order key of the state's current round: fold_in(key, round)."""
    return jax.random.fold_in(state.key, state.round)


def round_begin(state: IRPState, *, tx, num_steps: int) -> RoundProgress:
    """Step 1 of a round: rewind the survivors (θ_rewind ⊙ m) with a fresh optimizer state."""
    start = train.init_state(masks.apply(state.rewind_params, state.mask), state.rewind_batch_stats, tx)
    zeros = jnp.zeros((num_steps,), jnp.float32)
    return RoundProgress(start, (state.rewind_params, state.rewind_batch_stats), {"loss": zeros, "accuracy": zeros})


def round_train(
    state: IRPState, progress: RoundProgress, train_data: train.Data, first_step, *, model, tx, num_steps: int,
    batch_size: int, capture_step: int | None = None,
) -> RoundProgress:
    """Step 2, in part: the round's training steps ``first_step … first_step + num_steps − 1``
    (:func:`jaxprune.train.train_steps`, data order from :func:`round_key`)."""
    trained, metrics, captured = train.train_steps(
        progress.train, state.mask, train_data, round_key(state), first_step, model=model, tx=tx,
        num_steps=num_steps, batch_size=batch_size, capture_step=capture_step, captured=progress.captured,
    )
    step_metrics = jax.tree.map(lambda buf, new: jax.lax.dynamic_update_slice_in_dim(buf, new, first_step, 0),
                                progress.step_metrics, metrics)
    return RoundProgress(trained, captured, step_metrics)


def criterion_batch(state: IRPState, train_data: train.Data, num_examples: int) -> tuple[jax.Array, jax.Array]:
    """The round's SNIP-criterion batch: ``num_examples`` training examples drawn without replacement by
    fold_in(:func:`round_key`, :data:`CRITERION_STREAM`)."""
    idx = jax.random.permutation(jax.random.fold_in(round_key(state), CRITERION_STREAM), train_data.x.shape[0])
    return train_data.x[idx[:num_examples]], train_data.y[idx[:num_examples]]


def criterion_scores(criterion: str, trained: train.TrainState, model, batch=None) -> PyTree:
    """Step 3's scores of the trained network: |θ_T| (``magnitude``) or ``pai.score('snip', …)`` = |θ_T ⊙ ∂L/∂θ|
    at θ_T, eval mode (running BatchNorm statistics), L the mean cross-entropy on ``batch`` (``snip``)."""
    if criterion == "magnitude":
        return jax.tree.map(jnp.abs, trained.params)
    return pai.score("snip", train.apply_fn_for(model, trained.batch_stats), trained.params, batch, None)


def round_end(
    state: IRPState, progress: RoundProgress, test_data: train.Data, next_density, train_data: train.Data = None, *,
    model, steps_per_epoch: int, scope: masks.Scope = "global", criterion: str = "magnitude",
    criterion_examples: int = 0,
) -> tuple[IRPState, dict]:
    """Steps 3–4 of a round, after all its training: evaluate, prune to ``next_density``, count survivors.

    ``criterion='snip'`` scores on :func:`criterion_batch` of ``train_data`` (``criterion_examples`` examples)."""
    trained = progress.train
    test = train.evaluate(trained.params, trained.batch_stats, test_data, model=model)
    batch = None if criterion == "magnitude" else criterion_batch(state, train_data, criterion_examples)
    scores = masks.restrict(criterion_scores(criterion, trained, model, batch), state.mask)
    new_mask = masks.from_scores(scores, trained.params, 1.0 - next_density, scope)
    newly_failed = (state.failed_round < 0) & (trained.failed_step >= 0)
    new_state = IRPState(
        rewind_params=progress.captured[0],
        rewind_batch_stats=progress.captured[1],
        mask=new_mask,
        survival=jax.tree.map(lambda s, m: s + m.astype(jnp.int32), state.survival, new_mask),
        key=state.key,
        round=state.round + 1,
        failed_round=jnp.where(newly_failed, state.round, state.failed_round),
        failed_step=jnp.where(newly_failed, trained.failed_step, state.failed_step),
    )
    epochs = train.epoch_means(progress.step_metrics, steps_per_epoch)
    metrics = {
        "density": masks.density(state.mask, state.rewind_params),
        "train_loss": epochs["loss"],
        "train_accuracy": epochs["accuracy"],
        "test_loss": test["loss"],
        "test_accuracy": test["accuracy"],
    }
    return new_state, metrics


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
    """One whole IRP round (rewind → train → evaluate → prune to ``next_density``) for one seed.

    ``next_density`` is the fraction of prunable weights kept after this round's pruning — (1 − f)^(r+1) for
    plain IRP, see :func:`schedule` — and may be traced, so one compiled round serves every round.
    ``capture_step`` (round 0 only) makes the rewind point the weights after that many steps of this
    round's training instead of the initialization. Returns the new state and this round's metrics: the
    density trained at, per-epoch train loss/accuracy, and test loss/accuracy of the trained sparse net.
    The same as :func:`round_begin`, :func:`round_train` over all steps, then :func:`round_end`.
    """
    per_epoch = train.steps_per_epoch(train_data.x.shape[0], batch_size)
    num_steps = epochs * per_epoch
    progress = round_begin(state, tx=tx, num_steps=num_steps)
    progress = round_train(state, progress, train_data, 0, model=model, tx=tx, num_steps=num_steps,
                           batch_size=batch_size, capture_step=capture_step)
    return round_end(state, progress, test_data, next_density, model=model, steps_per_epoch=per_epoch, scope=scope)


def mask_after(state: IRPState, rounds: int) -> PyTree:
    """The mask after ``rounds`` ≤ ``state.round`` rounds, read off the survival counts: survival ≥ r ⇔ w ∈ m_r."""
    return jax.tree.map(lambda s: s >= rounds, state.survival)
