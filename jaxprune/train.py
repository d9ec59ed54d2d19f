"""Training one masked network: optimizer, jitted step, epochs as ``lax.scan``, evaluation.

Everything here is written for ONE seed; experiments lift it with ``jax.vmap`` over a leading seed axis
(params, optimizer state, masks, data-order keys) while the dataset arrays are shared, unbatched.

Masked training keeps pruned weights at exactly zero. With m the mask and a pruned weight θ_i = 0 at the
start, each step computes

    g ← g ⊙ m,    (u, s) ← tx(g, s, θ),    u ← u ⊙ m,    θ ← θ + u,

so a pruned weight receives no gradient, no momentum, no weight decay and no Adam update: θ_i stays 0
bit-exactly (``where`` is used, so even a non-finite update cannot leak through the mask).

Gradient noise (``gradient_noise_std`` σ > 0): every gradient entry gets i.i.d. Gaussian noise before the mask and
the optimizer, g ← g + σ ξ with ξ ~ N(0, I), drawn at step t from ``fold_in(fold_in(key, NOISE_STREAM), t)`` with
``key`` the run's data-order key (the epoch orders use ``fold_in(key, e)``, e < NOISE_STREAM): its own stream, so
noise changes neither the data order nor any other draw. σ may be traced (vmapped over a sweep). A Python 0 skips
the draw: plain training, bit for bit. A traced 0 adds exact zeros, but in another compiled program, which XLA may
fuse differently: equal to plain training up to float rounding (1-ulp differences measured).

Non-finite losses are detected inside the compiled loop without a host sync: ``failed_step`` records the
first step at which a seed's loss was NaN/inf (-1 while healthy) and that seed's parameters are frozen from
then on, so one diverged seed neither crashes the sweep nor contaminates the others.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxprune import masks

PyTree = Any
OPTIMIZERS = ("sgd", "adam", "adamw")
NOISE_STREAM = 2**31 - 1  # fold_in tag of the gradient-noise key stream (epoch e's order uses fold_in(key, e))
LR_SCHEDULES = ("constant", "cosine", "step")


@flax.struct.dataclass
class TrainState:
    """Per-seed training state. ``batch_stats`` is ``{}`` for models without BatchNorm."""

    params: PyTree
    batch_stats: PyTree
    opt_state: optax.OptState
    step: jax.Array
    failed_step: jax.Array  # first step with a non-finite loss, -1 if none


class Data(NamedTuple):
    """Training or evaluation arrays on device: x [N, ...], y [N] (int labels, or float regression targets)."""

    x: jax.Array
    y: jax.Array


def make_optimizer(
    name: str,
    learning_rate: float,
    *,
    total_steps: int,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    schedule: str = "constant",
    warmup_steps: int = 0,
) -> optax.GradientTransformation:
    """An optax optimizer.

    ``sgd``: heavy-ball momentum with coupled L2 (g + λθ, as PyTorch's SGD weight_decay);
    ``adam``: Adam with coupled L2; ``adamw``: Adam with decoupled weight decay.
    Schedules: constant, cosine decay to 0 over ``total_steps``, or step (×0.1 at 50% and 75%), each after a
    linear warmup of ``warmup_steps``.
    """
    if schedule == "constant":
        lr = optax.constant_schedule(learning_rate)
    elif schedule == "cosine":
        lr = optax.cosine_decay_schedule(learning_rate, max(total_steps - warmup_steps, 1))
    elif schedule == "step":
        decay_steps = max(total_steps - warmup_steps, 1)
        lr = optax.piecewise_constant_schedule(
            learning_rate, {int(0.5 * decay_steps): 0.1, int(0.75 * decay_steps): 0.1}
        )
    else:
        raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {schedule!r}")
    if warmup_steps > 0:
        lr = optax.join_schedules([optax.linear_schedule(0.0, learning_rate, warmup_steps), lr], [warmup_steps])
    if name == "sgd":
        return optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(lr, momentum=momentum or None))
    if name == "adam":
        return optax.chain(optax.add_decayed_weights(weight_decay), optax.adam(lr))
    if name == "adamw":
        return optax.adamw(lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


def optimizer_from_config(config, steps_per_epoch: int) -> optax.GradientTransformation:
    """The optimizer a config asks for, for one training run of ``config.epochs`` epochs."""
    return make_optimizer(
        config.optimizer,
        config.learning_rate,
        total_steps=config.epochs * steps_per_epoch,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        schedule=config.lr_schedule,
        warmup_steps=config.warmup_epochs * steps_per_epoch,
    )


def init_variables(model: nn.Module, key: jax.Array, x_example: jax.Array) -> tuple[PyTree, PyTree]:
    """(params, batch_stats) of a freshly initialized model; ``x_example`` is one unbatched input."""
    variables = model.init(key, x_example[None], train=False)
    return variables["params"], variables.get("batch_stats", {})


def init_state(params: PyTree, batch_stats: PyTree, tx: optax.GradientTransformation) -> TrainState:
    """Fresh optimizer state around given weights (e.g. rewound ones)."""
    return TrainState(params, batch_stats, tx.init(params), jnp.zeros((), jnp.int32), jnp.full((), -1, jnp.int32))


def _variables(params: PyTree, batch_stats: PyTree) -> dict:
    return {"params": params, "batch_stats": batch_stats} if batch_stats else {"params": params}


def apply_model(model: nn.Module, params: PyTree, batch_stats: PyTree, x: jax.Array, train: bool = False):
    """Logits (and, when ``train``, the updated batch_stats)."""
    if train:
        logits, updates = model.apply(_variables(params, batch_stats), x, train=True, mutable=["batch_stats"])
        return logits, updates.get("batch_stats", {})
    return model.apply(_variables(params, batch_stats), x, train=False)


def loss_and_accuracy(logits: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-example loss and correctness.

    Integer ``y``: softmax cross-entropy and argmax accuracy. Float ``y`` (regression, one output unit):
    squared error ½(f(x) − y)² and accuracy ≡ 0.
    """
    if jnp.issubdtype(y.dtype, jnp.integer):
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        return loss, (jnp.argmax(logits, -1) == y).astype(jnp.float32)
    err = logits[..., 0] - y
    return 0.5 * err**2, jnp.zeros_like(err)


def add_gradient_noise(grads: PyTree, std, key: jax.Array | None) -> PyTree:
    """g + std · ξ with ξ ~ N(0, I) i.i.d. over every entry of every leaf (one key per leaf, split from ``key``);
    ``std`` a Python 0 returns ``grads`` untouched (no draw)."""
    if isinstance(std, (int, float)) and std == 0:
        return grads
    leaves, treedef = jax.tree.flatten(grads)
    keys = jax.random.split(key, len(leaves))
    return treedef.unflatten([g + std * jax.random.normal(k, g.shape, g.dtype) for g, k in zip(leaves, keys)])


def train_step(
    state: TrainState, mask: PyTree, x: jax.Array, y: jax.Array, *, model: nn.Module, tx: optax.GradientTransformation,
    gradient_noise_std=0.0, noise_key: jax.Array | None = None,
) -> tuple[TrainState, dict]:
    """One masked optimizer step on a batch; see the module docstring for the masking rule and gradient noise."""

    def batch_loss(params):
        logits, batch_stats = apply_model(model, params, state.batch_stats, x, train=True)
        loss, correct = loss_and_accuracy(logits, y)
        return jnp.mean(loss), (batch_stats, jnp.mean(correct))

    (loss, (batch_stats, accuracy)), grads = jax.value_and_grad(batch_loss, has_aux=True)(state.params)
    grads = masks.apply(add_gradient_noise(grads, gradient_noise_std, noise_key), mask)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, masks.apply(updates, mask))
    healthy = (state.failed_step < 0) & jnp.isfinite(loss)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(healthy, n, o), new, old)  # noqa: E731
    failed_step = jnp.where((state.failed_step < 0) & ~healthy, state.step, state.failed_step)
    new_state = TrainState(
        keep(params, state.params), keep(batch_stats, state.batch_stats), keep(opt_state, state.opt_state),
        state.step + 1, failed_step,
    )
    return new_state, {"loss": loss, "accuracy": accuracy}


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Full batches per epoch (the last incomplete batch is dropped)."""
    return num_examples // batch_size


def epoch_order(key: jax.Array, epoch, num_examples: int) -> jax.Array:
    """The data order of epoch ``epoch`` of a run with data-order key ``key``: a permutation of the examples."""
    return jax.random.permutation(jax.random.fold_in(key, epoch), num_examples)


def train_steps(
    state: TrainState, mask: PyTree, data: Data, key: jax.Array, first_step, *, model, tx, num_steps: int,
    batch_size: int, capture_step: int | None = None, captured: PyTree = None, gradient_noise_std=0.0,
) -> tuple[TrainState, dict, PyTree]:
    """Steps ``first_step, …, first_step + num_steps − 1`` of a masked training run, as one ``lax.scan``.

    The data order is a pure function of the step: with b = ``steps_per_epoch(N, batch_size)``, step t trains on
    batch t mod b of epoch e = ⌊t / b⌋, whose order is ``epoch_order(key, e, N)`` (batches gathered from the
    on-device arrays by index; no permuted copy). A run may therefore be cut into segments anywhere — e.g. to
    checkpoint — and resumed from (state, t) alone, bit for bit. ``first_step`` may be traced, so one compiled
    program serves every segment of the same length; ``state.step`` should equal ``first_step``.

    If ``capture_step`` is given, ``captured`` is replaced by the (params, batch_stats) held *before* step
    ``capture_step`` runs (i.e. after ``capture_step`` updates), for rewinding. Returns the final state, the
    per-step ``loss`` and ``accuracy`` [num_steps], and ``captured``. ``gradient_noise_std``: see the module
    docstring (step t's noise key is a function of (key, t) too, so segments resume bit for bit).
    """
    n = data.x.shape[0]
    per_epoch = steps_per_epoch(n, batch_size)
    noise_stream = jax.random.fold_in(key, NOISE_STREAM)

    def step(carry, t):
        state, order, captured = carry
        # The predicates depend on the step only, never on a seed, so under vmap they stay branches. The first
        # step's order is already in the carry.
        new_epoch = (t % per_epoch == 0) & (t != first_step)
        order = jax.lax.cond(new_epoch, lambda: epoch_order(key, t // per_epoch, n), lambda: order)
        if capture_step is not None:
            captured = jax.lax.cond(t == capture_step, lambda: (state.params, state.batch_stats), lambda: captured)
        idx = jax.lax.dynamic_slice_in_dim(order, (t % per_epoch) * batch_size, batch_size)
        noise_key = jax.random.fold_in(noise_stream, t)
        state, metrics = train_step(state, mask, data.x[idx], data.y[idx], model=model, tx=tx,
                                    gradient_noise_std=gradient_noise_std, noise_key=noise_key)
        return (state, order, captured), metrics

    first_order = epoch_order(key, first_step // per_epoch, n)
    steps = first_step + jnp.arange(num_steps)
    (state, _, captured), metrics = jax.lax.scan(step, (state, first_order, captured), steps)
    return state, metrics, captured


def epoch_means(step_metrics: dict, per_epoch: int) -> dict:
    """Per-epoch means of per-step metrics: [..., epochs · per_epoch] → [..., epochs]."""
    return jax.tree.map(lambda v: jnp.mean(v.reshape(*v.shape[:-1], -1, per_epoch), axis=-1), step_metrics)


def train(
    state: TrainState, mask: PyTree, data: Data, key: jax.Array, *, model, tx, epochs: int, batch_size: int,
    capture_step: int | None = None, gradient_noise_std=0.0,
) -> tuple[TrainState, dict, PyTree]:
    """``epochs`` epochs of masked training from step 0 (:func:`train_steps`; epoch e's order from
    ``fold_in(key, e)``).

    Returns the final state, per-epoch mean loss and accuracy (arrays of length ``epochs``) and the
    (params, batch_stats) captured at ``capture_step`` (``None`` when not capturing). Pruned weights must already
    be zero in ``state.params`` (use ``masks.apply`` first); they then stay exactly zero.
    """
    per_epoch = steps_per_epoch(data.x.shape[0], batch_size)
    captured = (state.params, state.batch_stats) if capture_step is not None else None
    state, metrics, captured = train_steps(
        state, mask, data, key, 0, model=model, tx=tx, num_steps=epochs * per_epoch, batch_size=batch_size,
        capture_step=capture_step, captured=captured, gradient_noise_std=gradient_noise_std,
    )
    return state, epoch_means(metrics, per_epoch), captured


def evaluate(params: PyTree, batch_stats: PyTree, data: Data, *, model, batch_size: int = 1000) -> dict:
    """Mean loss and accuracy over all of ``data`` (inference mode), in chunks of ``batch_size``.

    The data are padded to a whole number of chunks and padded rows get weight 0, so every example counts once.
    """
    n = data.x.shape[0]
    chunks = -(-n // batch_size)
    pad = chunks * batch_size - n
    x = jnp.pad(data.x, [(0, pad)] + [(0, 0)] * (data.x.ndim - 1)).reshape(chunks, batch_size, *data.x.shape[1:])
    y = jnp.pad(data.y, (0, pad)).reshape(chunks, batch_size)
    weight = (jnp.arange(chunks * batch_size) < n).reshape(chunks, batch_size)

    def chunk_sums(args):
        xc, yc, wc = args
        loss, correct = loss_and_accuracy(apply_model(model, params, batch_stats, xc), yc)
        return jnp.sum(jnp.where(wc, loss, 0.0)), jnp.sum(jnp.where(wc, correct, 0.0))

    loss_sum, correct_sum = jax.lax.map(chunk_sums, (x, y, weight))
    return {"loss": jnp.sum(loss_sum) / n, "accuracy": jnp.sum(correct_sum) / n}


def apply_fn_for(model: nn.Module, batch_stats: PyTree) -> Callable:
    """``apply_fn(params, x) -> logits`` in inference mode (BatchNorm uses running statistics), for scorers."""
    return lambda params, x: apply_model(model, params, batch_stats, x, train=False)
