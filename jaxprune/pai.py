"""Pruning at initialization (PaI): saliency scores and the masks they give, as in Synaptic-Flow.

Semantics follow the reference implementation of Tanaka et al. 2020 (github.com/ganguli-lab/Synaptic-Flow,
``Pruners/pruners.py`` and ``prune.py``), which "No Free Prune" used. With θ the parameters, only the
prunable leaves (``masks.prunable``: Dense/Conv kernels) are scored; every other leaf gets score 0.

- ``random``:    s ~ N(0, 1) i.i.d.
- ``magnitude``: s = |θ|.
- ``snip``:      s = |θ ⊙ ∂L/∂θ|, L = mean softmax cross-entropy of ``apply_fn(θ, x)`` on labels y (float
  regression targets: mean ½ squared error, see :func:`scoring_loss`).
- ``grasp``:     s = θ ⊙ Hg, with L_T the cross-entropy of the logits divided by a temperature T (200),
  g = ∇L_T set to 0 outside the prunable leaves, and Hg = ∇_θ(stop_grad(g) · ∇L_T) (a Hessian-vector product,
  computed forward-over-reverse as the JVP of ∇L_T along g).
  Sign convention: the LARGEST θ ⊙ Hg are kept. The GraSP paper (Wang et al. 2020) scores S = -θ ⊙ Hg and
  removes the largest S, which is the same mask. Synaptic-Flow stores θ ⊙ Hg unnegated (its comment says
  "negate to remove top percent", but the code does not negate) and keeps the scores above the threshold,
  i.e. it also keeps the largest θ ⊙ Hg; we do the same. Its division by |Σ s| + 1e-10 is a positive
  rescaling that does not change the ranking, so we omit it (likewise SNIP's division by Σ s).
- ``synflow``:   s = |θ ⊙ ∂R/∂θ|, R = 1ᵀ f(1; |θ|): every parameter (biases and normalization parameters
  too) replaced by its absolute value, an all-ones input of one example, no data, no labels.

Several batches (``prune``): as in Synaptic-Flow, gradients are SUMMED over the B batches: SNIP uses
Σ_b ∇L_b; GraSP uses g = Σ_b ∇L_{T,b} and Hg = Σ_b H_b g. For equal-size batches this is B (SNIP) or B²
(GraSP) times the score of the concatenated batch, so the ranking is that of the full-batch score.

BatchNorm: ``apply_fn(params, x)`` must close over ``batch_stats`` and run in eval mode (running averages),
which is what Synaptic-Flow does (``model.eval()`` while pruning). SynFlow's |θ| is applied to ``params``
only; Synaptic-Flow also takes |·| of the running statistics, which makes no difference at initialization
(mean 0, variance 1).

Scorers are looked up by name in a registry (:func:`register`, :func:`methods`); the five above are registered
by this module, and a user's scorer registered under a new name is a valid method everywhere a built-in is (the
experiments' ``config.methods``, ``score``, ``prune``). Every scorer has the signature

    score_fn(apply_fn, params, batches, key, options) -> scores

with ``batches = (x [B, batch, ...], y [B, batch])`` the B scoring batches, ``key`` a PRNG key for the scorer's
own randomness, ``options`` a :class:`ScoringOptions` (GraSP's temperature), and ``scores`` a pytree shaped like
``params`` in which larger means "keep". Scores off the prunable leaves are set to 0 afterwards.

Every function is pure, for one network; ``jax.jit(jax.vmap(...))`` over a seed axis of (params, key).
"""
from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxprune import masks, train
from jaxprune.errors import ConfigError

PyTree = masks.PyTree
ApplyFn = Callable[[PyTree, jax.Array], jax.Array]
Batch = tuple[jax.Array, jax.Array]

SCHEDULES = ("exponential", "linear")
# Names the experiments give methods that are not PaI scorers (jaxprune.experiments.masking's after-training and
# learned methods, the pai experiment's dense reference): a scorer registered under one would be shadowed.
RESERVED = ("imp", "magnitude_after", "autosparse", "dense")


class ScoringOptions(NamedTuple):
    """Options a scorer may use: ``temperature`` T of GraSP's softened cross-entropy."""

    temperature: float = 200.0


Scorer = Callable[[ApplyFn, PyTree, Batch, jax.Array, ScoringOptions], PyTree]
_SCORERS: dict[str, Scorer] = {}


def _closure_values(fn: Callable) -> tuple:
    return tuple(cell.cell_contents for cell in fn.__closure__ or ())


def _same_definition(a: Scorer, b: Scorer) -> bool:
    """True if ``a`` and ``b`` are one function, or the same definition loaded twice (a config file executed
    again: equal code at the same place of the same file, equal defaults and closure values)."""
    if a is b:
        return True
    code_a, code_b = getattr(a, "__code__", None), getattr(b, "__code__", None)
    if code_a is None or code_b is None or code_a != code_b or a.__qualname__ != b.__qualname__:
        return False
    if os.path.realpath(code_a.co_filename) != os.path.realpath(code_b.co_filename):
        return False
    try:
        return bool(a.__defaults__ == b.__defaults__ and _closure_values(a) == _closure_values(b))
    except Exception:  # closure values that do not compare to a bool (arrays): not provably the same
        return False


def register(name: str, score_fn: Scorer) -> None:
    """Make ``score_fn`` the scorer of method ``name`` (module docstring: its signature and what it returns).

    ``name`` must be a new identifier-like name, not a built-in, not in :data:`RESERVED`. Registering the same
    function again (or the same definition again, as when a config file is loaded twice) is allowed; any other
    reuse of a name, or a ``score_fn`` that cannot be called as ``score_fn(apply_fn, params, batches, key,
    options)``, raises ConfigError.
    """
    if not (isinstance(name, str) and name.isidentifier()) or name in RESERVED:
        raise ConfigError(f"pai.register: name {name!r} must be an identifier (letters, digits, _) and not one of "
                          f"{', '.join(RESERVED)}")
    if name in _SCORERS and not _same_definition(_SCORERS[name], score_fn):
        raise ConfigError(f"pai.register: a scorer named {name!r} is already registered; choose another name")
    try:
        inspect.signature(score_fn).bind("apply_fn", "params", "batches", "key", "options")
    except (TypeError, ValueError) as e:
        raise ConfigError(f"pai.register({name!r}, ...): score_fn must be callable as score_fn(apply_fn, params, "
                          f"batches, key, options) ({e})") from None
    _SCORERS[name] = score_fn


def methods() -> tuple[str, ...]:
    """The registered scorers' names: the built-ins, then the user's in registration order."""
    return tuple(_SCORERS)


def scoring_loss(apply_fn: ApplyFn, params: PyTree, batch: Batch, temperature: float = 1.0) -> jax.Array:
    """The loss SNIP and GraSP differentiate. Integer labels y: L = mean_i CE(softmax(f(θ; x_i) / T), y_i).
    Float targets y (regression, one output unit): L = mean_i ½ (f(θ; x_i)₀ − y_i)², the training loss of
    :func:`jaxprune.train.loss_and_accuracy`; T is not applied (it softens a softmax; squared error has none)."""
    x, y = batch
    if jnp.issubdtype(y.dtype, jnp.integer):
        return optax.softmax_cross_entropy_with_integer_labels(apply_fn(params, x) / temperature, y).mean()
    return train.loss_and_accuracy(apply_fn(params, x), y)[0].mean()


def _prunable_only(tree: PyTree, params: PyTree) -> PyTree:
    """``tree`` with every non-prunable leaf replaced by zeros."""
    return jax.tree.map(lambda t, keep: t if keep else jnp.zeros_like(t), tree, masks.prunable(params))


def _sum_over_batches(fn: Callable[[Batch], PyTree], batches: Batch) -> PyTree:
    """Σ_b fn(batch_b) over the leading axis of ``batches``, one batch at a time (``lax.scan``)."""
    shapes = jax.eval_shape(fn, jax.tree.map(lambda a: a[0], batches))
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def add(total, batch):
        return jax.tree.map(jnp.add, total, fn(batch)), None

    return jax.lax.scan(add, zeros, batches)[0]


def _random(apply_fn: ApplyFn, params: PyTree, batches: Batch, key: jax.Array, options: ScoringOptions) -> PyTree:
    """i.i.d. N(0, 1) scores, an independent key per leaf."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    noise = [jax.random.normal(k, jnp.shape(p), jnp.result_type(p)) for k, p in zip(keys, leaves)]
    return jax.tree.unflatten(treedef, noise)


def _magnitude(apply_fn: ApplyFn, params: PyTree, batches: Batch, key: jax.Array, options: ScoringOptions) -> PyTree:
    """|θ|."""
    return jax.tree.map(jnp.abs, params)


def _snip(apply_fn: ApplyFn, params: PyTree, batches: Batch, key: jax.Array, options: ScoringOptions) -> PyTree:
    """|θ ⊙ Σ_b ∇L_b(θ)|."""
    grads = _sum_over_batches(lambda b: jax.grad(scoring_loss, argnums=1)(apply_fn, params, b), batches)
    return jax.tree.map(lambda p, g: jnp.abs(p * g), params, grads)


def _grasp(apply_fn: ApplyFn, params: PyTree, batches: Batch, key: jax.Array, options: ScoringOptions) -> PyTree:
    """θ ⊙ Hg with g = Σ_b ∇L_{T,b} restricted to prunable leaves and Hg = Σ_b ∇²L_{T,b} g, T = options.temperature."""

    def grad_fn(p, b):
        return jax.grad(scoring_loss, argnums=1)(apply_fn, p, b, options.temperature)

    g = _prunable_only(_sum_over_batches(lambda b: grad_fn(params, b), batches), params)
    hg = _sum_over_batches(lambda b: jax.jvp(lambda p: grad_fn(p, b), (params,), (g,))[1], batches)
    return jax.tree.map(jnp.multiply, params, hg)


def _log2_gain(kernel_abs: jax.Array) -> jax.Array:
    """log₂ of the mean over output units of Σ_fan-in |W|: the layer's gain on a constant input (0 if W = 0)."""
    gain = jnp.sum(kernel_abs) / kernel_abs.shape[-1]
    return jnp.where(gain > 0, jnp.log2(jnp.where(gain > 0, gain, 1.0)), 0.0)


def _synflow(apply_fn: ApplyFn, params: PyTree, batches: Batch, key: jax.Array, options: ScoringOptions) -> PyTree:
    """|θ ⊙ ∂R/∂θ|, R = 1ᵀ f(1; |θ|), times one power of two 2^(-2h) that keeps float32 from overflowing; the
    input 1 has the shape of one example of ``batches`` (no data, no labels).

    R grows like the product of the layer gains (≈ 2^140 for 20 layers of gain 128) and overflows float32 in
    deep nets (Synaptic-Flow has a commented-out float64 cast for this); at extreme sparsity it underflows.
    The linearized net f(·; |θ|) is positively homogeneous of degree 1 jointly in (input, additive parameters):
    scaling the input and every ``bias`` leaf by s = 2^(-h), kernels untouched, scales every activation and R by
    s. Differentiating s'·R with s' = 2^(-h) scales every back-propagated cotangent by s'. So each kernel's score
    comes out as s·s'·|θ ∂R/∂θ|: the reference score times one positive constant (exactly: powers of two),
    hence the same ranking. h is half the estimate log₂ R ≈ Σ_l log₂ gain_l, so activations and cotangents
    stay within ≈ 2^(±|log₂ R|/2): safe for |log₂ R| up to ≈ 250, i.e. R within 10^±75, twice float32's
    range. Exactness needs f homogeneous: ReLU, pooling, residual sums, eval-mode BatchNorm with zero running
    mean (true at initialization), additive parameters named ``bias`` (Flax Dense/Conv/BatchNorm); not
    LayerNorm or tanh, which SynFlow's linearization does not cover either.
    """
    flow = jax.tree.map(jnp.abs, params)
    log2_r = sum(_log2_gain(w) for w in masks.prunable_leaves(flow, params))
    shift = jnp.exp2(-jnp.floor(log2_r / 2))
    shifted = jax.tree_util.tree_map_with_path(
        lambda path, p: p * shift if masks.path_name(path).split("/")[-1] == "bias" else p, flow
    )
    ones = jnp.broadcast_to(shift, (1, *batches[0].shape[2:]))
    grads = jax.grad(lambda p: shift * jnp.sum(apply_fn(p, ones)))(shifted)
    return jax.tree.map(lambda p, g: jnp.abs(p * g), flow, grads)


for _name, _fn in (("random", _random), ("magnitude", _magnitude), ("snip", _snip), ("grasp", _grasp),
                  ("synflow", _synflow)):
    register(_name, _fn)


def _shapes(tree: PyTree) -> PyTree:
    return jax.tree.map(jnp.shape, tree)


def _check_method(method: str) -> None:
    if method not in _SCORERS:
        raise ConfigError(f"method must be one of {methods()}, got {method!r}")


def _scores_on_batches(
    method: str, apply_fn: ApplyFn, params: PyTree, batches: Batch, key: jax.Array, options: ScoringOptions
) -> PyTree:
    """Scores of the registered scorer ``method`` (gradients summed over the leading axis of ``batches``), set to 0
    off the prunable leaves; ConfigError if the scorer returns a pytree not shaped like ``params``."""
    _check_method(method)
    raw = _SCORERS[method](apply_fn, params, batches, key, options)
    if jax.tree.structure(raw) != jax.tree.structure(params) or _shapes(raw) != _shapes(params):
        raise ConfigError(f"scorer {method!r} returned {_shapes(raw)}, not a pytree shaped like params "
                          f"{_shapes(params)}")
    return _prunable_only(raw, params)


def score(
    method: str, apply_fn: ApplyFn, params: PyTree, batch: Batch, key: jax.Array, *, temperature: float = 200.0
) -> PyTree:
    """Saliency scores of ``method`` on one batch ``(x, y)``: a pytree like ``params``, 0 off prunable leaves.

    ``key`` is used by ``random`` only; ``temperature`` by ``grasp`` only; ``synflow`` uses only x's shape.
    """
    batches = jax.tree.map(lambda a: a[None], batch)
    return _scores_on_batches(method, apply_fn, params, batches, key, ScoringOptions(temperature))


def _check_prune_args(method: str, scope: str, allocation: str, rounds: int, schedule: str) -> None:
    """Raise ``ConfigError`` naming the first bad argument."""
    _check_method(method)
    choices = {"scope": (scope, masks.SCOPES),
               "allocation": (allocation, masks.ALLOCATIONS), "schedule": (schedule, SCHEDULES)}
    for name, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(f"{name} must be one of {allowed}, got {value!r}")
    if not isinstance(rounds, int) or rounds < 1:
        raise ConfigError(f"rounds must be a positive integer, got {rounds!r}")


def _density_after(r: jax.Array, rounds: int, start: jax.Array, target: jax.Array, schedule: str) -> jax.Array:
    """Density after round r of ``rounds``, from ``start`` to ``target``.

    exponential: d_r = d_0 (d / d_0)^(r/R)  (Synaptic-Flow: d^(r/R) from d_0 = 1);  linear: d_0 + (d - d_0) r/R.
    """
    frac = r / rounds
    if schedule == "exponential":
        return start * (target / start) ** frac
    return start + (target - start) * frac


def prune(
    method: str,
    apply_fn: ApplyFn,
    params: PyTree,
    batches: Batch,
    key: jax.Array,
    sparsity: float | jax.Array,
    *,
    scope: masks.Scope = "global",
    allocation: masks.Allocation = "uniform",
    mask: PyTree | None = None,
    rounds: int | None = None,
    schedule: str = "exponential",
    temperature: float = 200.0,
    invert: bool = False,
) -> PyTree:
    """Bool mask at ``sparsity`` from ``rounds`` rounds of scoring the currently masked network.

    ``batches = (x, y)`` with a leading axis of B batches ([B, batch, ...]); gradients are summed over them.
    Round r = 1..R scores θ ⊙ m_{r-1}, sets already-pruned weights to -inf (``masks.restrict``) and keeps the
    top weights at density d_r (``schedule``, see ``_density_after``; the last round uses ``sparsity`` itself,
    so the final count is exactly that of ``masks.from_scores``). ``rounds`` defaults to 100 for synflow
    (iterative SynFlow, which avoids layer collapse) and 1 (single shot) for the others. ``mask`` is the
    starting mask m_0 (default all-True); the result is a subset of it, and the schedule starts at its
    density. ``invert=True`` keeps the LOWEST scores (the inversion ablation of Frankle et al. 2021).
    ``key`` is split into one key per round (used by ``random``). Rounds run in ``lax.scan``.
    """
    rounds = (100 if method == "synflow" else 1) if rounds is None else rounds
    _check_prune_args(method, scope, allocation, rounds, schedule)
    start = masks.ones(params) if mask is None else mask
    start_density = masks.density(start, params)
    target = 1.0 - jnp.asarray(sparsity, jnp.float32)
    sign = -1.0 if invert else 1.0
    options = ScoringOptions(temperature)

    def one_round(current: PyTree, round_and_key: tuple[jax.Array, jax.Array]) -> tuple[PyTree, None]:
        r, round_key = round_and_key
        scores = _scores_on_batches(method, apply_fn, masks.apply(params, current), batches, round_key, options)
        scores = masks.restrict(jax.tree.map(lambda s: sign * s, scores), current)
        density = _density_after(r, rounds, start_density, target, schedule)
        round_sparsity = jnp.where(r == rounds, sparsity, 1.0 - density)
        new = masks.from_scores(scores, params, round_sparsity, scope, allocation)
        return jax.tree.map(jnp.logical_and, new, current), None

    steps = (jnp.arange(1, rounds + 1), jax.random.split(key, rounds))
    return jax.lax.scan(one_round, start, steps)[0]
