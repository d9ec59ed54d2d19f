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

- ``iterative_snip``: SNIP over ``rounds`` (10) rounds of the masked network, pruned weights staying pruned;
  ``force``: |θ ⊙ ∂L/∂w| at w = θ ⊙ m_{r-1} for every weight, pruned ones may come back (:func:`prune`; de Jorge
  et al. 2021, github.com/naver/force).
- ``prospr``:    |∂L(θ_K)/∂c| at c = 1 through K inner SGD steps from c ⊙ θ (:func:`_prospr`; Alizadeh et al. 2022).
- ``npb``:       Node-Path Balancing's per-layer MILP mask (:mod:`jaxprune.npb`; Pham et al. 2023), as 0/1 scores.

Several batches (``prune``): as in Synaptic-Flow, gradients are SUMMED over the B batches: SNIP uses
Σ_b ∇L_b; GraSP uses g = Σ_b ∇L_{T,b} and Hg = Σ_b H_b g. For equal-size batches this is B (SNIP) or B²
(GraSP) times the score of the concatenated batch, so the ranking is that of the full-batch score.

BatchNorm: ``apply_fn(params, x)`` must close over ``batch_stats`` and run in eval mode (running averages),
which is what Synaptic-Flow does (``model.eval()`` while pruning). SynFlow's |θ| is applied to ``params``
only; Synaptic-Flow also takes |·| of the running statistics, which makes no difference at initialization
(mean 0, variance 1).

Scorers are looked up by name in a registry (:func:`register`, :func:`methods`); the nine above are registered
by this module, and a user's scorer registered under a new name is a valid method everywhere a built-in is (the
experiments' ``config.methods``, ``score``, ``prune``). Every scorer has the signature

    score_fn(apply_fn, params, batches, key, options) -> scores

with ``batches = (x [B, batch, ...], y [B, batch])`` the B scoring batches, ``key`` a PRNG key for the scorer's
own randomness, ``options`` a :class:`ScoringOptions` (GraSP's temperature, the round's sparsity, ...), and
``scores`` a pytree shaped like
``params`` in which larger means "keep". Scores off the prunable leaves are set to 0 afterwards.

Every function is pure, for one network; ``jax.jit(jax.vmap(...))`` over a seed axis of (params, key).
"""
from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxprune import masks, npb, train
from jaxprune.errors import ConfigError

PyTree = masks.PyTree
ApplyFn = Callable[[PyTree, jax.Array], jax.Array]
Batch = tuple[jax.Array, jax.Array]

SCHEDULES = ("exponential", "linear")
# Names the experiments give methods that are not PaI scorers (jaxprune.experiments.masking's after-training and
# learned methods, the pai experiment's dense reference): a scorer registered under one would be shadowed.
RESERVED = ("imp", "magnitude_after", "autosparse", "dense")
# Built-in scorers that use no data (a user's scorer is assumed to use its batches).
DATA_FREE = ("random", "magnitude", "synflow", "npb")


class ScoringOptions(NamedTuple):
    """Options a scorer may use: ``temperature`` T of GraSP's softened cross-entropy; ``sparsity``, the target
    sparsity of the round being scored (a scorer that solves for a mask, as NPB, needs it; may be traced);
    ProsPr's inner loop (``inner_steps`` SGD steps of learning rate ``inner_lr``, momentum ``inner_momentum``);
    NPB's weight ``npb_alpha`` of effective nodes against effective paths."""

    temperature: float = 200.0
    sparsity: float | jax.Array = 0.0
    inner_steps: int = 3
    inner_lr: float = 0.1
    inner_momentum: float = 0.0
    npb_alpha: float = 0.99


DEFAULT_OPTIONS = ScoringOptions()
Scorer = Callable[[ApplyFn, PyTree, Batch, jax.Array, ScoringOptions], PyTree]


class Method(NamedTuple):
    """A registered method: its scorer, how many rounds :func:`prune` runs by default, and whether a round may
    revive weights pruned in an earlier one (FORCE: scores every weight, the network evaluated at the current
    mask) or only prunes among the survivors (SNIP, SynFlow: the masked network scored, pruned weights -inf)."""

    score_fn: Scorer
    rounds: int = 1
    revive: bool = False


_SCORERS: dict[str, Method] = {}


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


def register(name: str, score_fn: Scorer, *, rounds: int = 1, revive: bool = False) -> None:
    """Make ``score_fn`` the scorer of method ``name`` (module docstring: its signature and what it returns),
    pruned in ``rounds`` rounds by default, reviving pruned weights between rounds if ``revive`` (:class:`Method`).

    ``name`` must be a new identifier-like name, not a built-in, not in :data:`RESERVED`. Registering the same
    function again (or the same definition again, as when a config file is loaded twice) is allowed; any other
    reuse of a name, or a ``score_fn`` that cannot be called as ``score_fn(apply_fn, params, batches, key,
    options)``, raises ConfigError.
    """
    if not (isinstance(name, str) and name.isidentifier()) or name in RESERVED:
        raise ConfigError(f"pai.register: name {name!r} must be an identifier (letters, digits, _) and not one of "
                          f"{', '.join(RESERVED)}")
    if name in _SCORERS and not (_same_definition(_SCORERS[name].score_fn, score_fn)
                                 and _SCORERS[name][1:] == (rounds, revive)):
        raise ConfigError(f"pai.register: a scorer named {name!r} is already registered; choose another name")
    try:
        inspect.signature(score_fn).bind("apply_fn", "params", "batches", "key", "options")
    except (TypeError, ValueError) as e:
        raise ConfigError(f"pai.register({name!r}, ...): score_fn must be callable as score_fn(apply_fn, params, "
                          f"batches, key, options) ({e})") from None
    if not (isinstance(rounds, int) and rounds >= 1):
        raise ConfigError(f"pai.register({name!r}, ...): rounds must be a positive integer, got {rounds!r}")
    _SCORERS[name] = Method(score_fn, rounds, bool(revive))


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


def _prospr(apply_fn: ApplyFn, params: PyTree, batches: Batch, key: jax.Array, options: ScoringOptions) -> PyTree:
    """ProsPr (Alizadeh et al. 2022): |∂L(θ_K; b_K) / ∂c| at c = 1, θ_0 = c ⊙ θ (c multiplies the prunable
    kernels), θ_{k+1} = θ_k − η v_{k+1}, v_{k+1} = μ v_k + ∇L(θ_k; b_k) (v_1 = ∇L(θ_0; b_0)): SGD of every
    parameter, K = ``options.inner_steps`` steps, differentiated through the steps (``grad`` through ``lax.scan``).

    As the reference (github.com/mil-ad/prospr, ``prospr.prune`` with its CLI defaults K = 3, η = 0.1, μ = 0,
    ``meta-grads-mode full``, ``new-data-in-inner`` off): one batch b for the inner steps and the meta-loss when
    B = 1; with B batches, b_k is batch k mod B. Differences: the loss is :func:`scoring_loss` on our
    ``batch_size`` examples (the reference: cross-entropy on 128), and BatchNorm runs in eval mode as for every
    scorer here (the reference: train mode).
    """
    prunable = masks.prunable(params)
    tx = optax.sgd(options.inner_lr, options.inner_momentum or None)
    batch = lambda k: jax.tree.map(lambda a: a[k % a.shape[0]], batches)
    grad_fn = jax.grad(scoring_loss, argnums=1)

    def meta_loss(c: PyTree) -> jax.Array:
        theta = jax.tree.map(lambda p, ci, keep: p * ci if keep else p, params, c, prunable)

        def step(carry, k):
            theta, state = carry
            updates, state = tx.update(grad_fn(apply_fn, theta, batch(k)), state, theta)
            return (optax.apply_updates(theta, updates), state), None

        steps = jnp.arange(options.inner_steps)
        theta = jax.lax.scan(step, (theta, tx.init(theta)), steps)[0][0]
        return scoring_loss(apply_fn, theta, batch(options.inner_steps))

    return jax.tree.map(jnp.abs, jax.grad(meta_loss)(jax.tree.map(jnp.ones_like, params)))


def _npb_masks(shapes: list[tuple[int, int]], alpha: float, densities: np.ndarray) -> list[np.ndarray]:
    """:func:`jaxprune.npb.masks_for` of every row of ``densities`` [..., L] (vmapped callers stack them), each
    distinct row solved once (the seeds of a sweep share it: NPB does not depend on the weights)."""
    rows = np.asarray(densities).reshape(-1, len(shapes))
    unique, index = np.unique(rows, axis=0, return_inverse=True)
    solved = [npb.masks_for(shapes, d, alpha) for d in unique]
    lead = np.shape(densities)[:-1]
    return [np.stack([solved[i][j] for i in index.ravel()]).reshape(*lead, *shape) for j, shape in enumerate(shapes)]


def _npb(apply_fn: ApplyFn, params: PyTree, batches: Batch, key: jax.Array, options: ScoringOptions) -> PyTree:
    """Node-Path Balancing (:mod:`jaxprune.npb`) at ``options.sparsity`` with ERK layer densities (the reference's
    default): 1 on NPB's kept weights, 0 elsewhere, plus |θ| / (2 max|θ|) < 1 so that, where the scope's count
    differs from NPB's by a few weights (NPB rounds each chunk's budget up and may keep fewer), the
    largest-magnitude weights fill or leave first. Solved on the host (a ``pure_callback``), data-agnostic: the
    mask depends on the architecture and the sparsity, the weights only break those ties."""
    kernels = masks.prunable_leaves(params, params)
    shapes = [tuple(k.shape) for k in kernels]
    npb.check_chain(shapes, int(batches[0][0, 0].size))
    if len(kernels) != sum(jax.tree.leaves(masks.kernels(params))):
        raise ConfigError("npb: every kernel of the chain must be prunable (config.prunable='')")
    densities = jnp.stack(masks.layer_densities(params, 1.0 - jnp.asarray(options.sparsity, jnp.float32), "erk"))
    out = [jax.ShapeDtypeStruct(shape, jnp.float32) for shape in shapes]
    chosen = iter(jax.pure_callback(functools.partial(_npb_masks, shapes, options.npb_alpha), out, densities,
                                    vmap_method="expand_dims"))
    big = jnp.max(jnp.stack([jnp.max(jnp.abs(k)) for k in kernels]))
    half = jnp.where(big > 0, 2 * big, 1.0)
    return jax.tree.map(lambda p, keep: next(chosen) + jnp.abs(p) / half if keep else jnp.zeros_like(p),
                        params, masks.prunable(params))


for _name, _fn, _rounds, _revive in (
        ("random", _random, 1, False), ("magnitude", _magnitude, 1, False), ("snip", _snip, 1, False),
        ("grasp", _grasp, 1, False), ("synflow", _synflow, 100, False),
        ("iterative_snip", _snip, 10, False), ("force", _snip, 10, True),
        ("prospr", _prospr, 1, False), ("npb", _npb, 1, False)):
    register(_name, _fn, rounds=_rounds, revive=_revive)


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
    raw = _SCORERS[method].score_fn(apply_fn, params, batches, key, options)
    if jax.tree.structure(raw) != jax.tree.structure(params) or _shapes(raw) != _shapes(params):
        raise ConfigError(f"scorer {method!r} returned {_shapes(raw)}, not a pytree shaped like params "
                          f"{_shapes(params)}")
    return _prunable_only(raw, params)


def score(
    method: str, apply_fn: ApplyFn, params: PyTree, batch: Batch, key: jax.Array, *,
    options: ScoringOptions = DEFAULT_OPTIONS
) -> PyTree:
    """Saliency scores of ``method`` on one batch ``(x, y)``: a pytree like ``params``, 0 off prunable leaves.

    ``key`` is used by ``random`` only; ``options`` (:class:`ScoringOptions`) by the scorers that name them;
    ``synflow`` uses only x's shape. One scoring, whatever the method's rounds (:func:`prune` runs those).
    """
    batches = jax.tree.map(lambda a: a[None], batch)
    return _scores_on_batches(method, apply_fn, params, batches, key, options)


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


def prune(method: str, apply_fn: ApplyFn, params: PyTree, batches: Batch, key: jax.Array, sparsity: float | jax.Array,
          *, scope: masks.Scope = "global", allocation: masks.Allocation = "uniform", mask: PyTree | None = None,
          rounds: int | None = None, schedule: str = "exponential", options: ScoringOptions = DEFAULT_OPTIONS,
          invert: bool = False) -> PyTree:
    """Bool mask at ``sparsity`` from ``rounds`` rounds of scoring the currently masked network.

    ``batches = (x, y)`` with a leading axis of B batches ([B, batch, ...]); gradients are summed over them.
    Round r = 1..R keeps the top weights at density d_r (``schedule``, see ``_density_after``; the last round
    uses ``sparsity`` itself, so the final count is exactly that of ``masks.from_scores``), scoring either

    - (default) the masked network θ ⊙ m_{r-1}, already-pruned weights set to -inf (``masks.restrict``): SNIP
      over rounds is iterative SNIP, SynFlow over rounds iterative SynFlow; or
    - (methods registered with ``revive``, FORCE) every weight of θ, the network evaluated at θ ⊙ m_{r-1} with
      gradients reaching the pruned weights too (a straight-through mask: value θ ⊙ m, derivative the identity),
      so a weight pruned in one round may come back in the next (de Jorge et al. 2021, "progressive
      skeletonization"; github.com/naver/force, ``iterative_pruning`` with ``prune_method=3``).

    ``rounds`` defaults to the method's registered count (:class:`Method`: 100 for synflow, 10 for
    iterative_snip and force, 1 for the others). ``mask`` is the starting mask m_0 (default all-True); the
    result is a subset of it, and the schedule starts at its density. ``invert=True`` keeps the LOWEST scores
    (the inversion ablation of Frankle et al. 2021). ``options.sparsity`` is set to each round's target
    sparsity. ``key`` is split into one key per round (used by ``random``). Rounds run in ``lax.scan``.
    """
    _check_method(method)
    rounds = _SCORERS[method].rounds if rounds is None else rounds
    revive = _SCORERS[method].revive
    _check_prune_args(method, scope, allocation, rounds, schedule)
    start = masks.ones(params) if mask is None else mask
    start_density = masks.density(start, params)
    target = 1.0 - jnp.asarray(sparsity, jnp.float32)

    def one_round(current: PyTree, round_and_key: tuple[jax.Array, jax.Array]) -> tuple[PyTree, None]:
        r, round_key = round_and_key
        density = _density_after(r, rounds, start_density, target, schedule)
        round_sparsity = jnp.where(r == rounds, sparsity, 1.0 - density)
        within = start if revive else current
        scores = _round_scores(method, apply_fn, params, current, within, batches, round_key,
                               options._replace(sparsity=round_sparsity), revive=revive, invert=invert)
        new = masks.from_scores(scores, params, round_sparsity, scope, allocation)
        return jax.tree.map(jnp.logical_and, new, within), None

    steps = (jnp.arange(1, rounds + 1), jax.random.split(key, rounds))
    return jax.lax.scan(one_round, start, steps)[0]


def _round_scores(method: str, apply_fn: ApplyFn, params: PyTree, current: PyTree, within: PyTree, batches: Batch,
                  key: jax.Array, options: ScoringOptions, *, revive: bool, invert: bool) -> PyTree:
    """One round's scores in :func:`prune`, −scores with ``invert``, −inf outside the mask ``within``: of the masked
    network θ ⊙ m (m = ``current``), or with ``revive`` of every weight of θ, the network evaluated at θ ⊙ m
    through a straight-through mask (:func:`_straight_through`)."""
    if revive:
        scored = _scores_on_batches(method, _straight_through(apply_fn, current), params, batches, key, options)
    else:
        scored = _scores_on_batches(method, apply_fn, masks.apply(params, current), batches, key, options)
    sign = -1.0 if invert else 1.0
    return masks.restrict(jax.tree.map(lambda s: sign * s, scored), within)


def _straight_through(apply_fn: ApplyFn, mask: PyTree) -> ApplyFn:
    """``apply_fn`` evaluated at θ ⊙ m whose derivative in θ is ∂/∂w at w = θ ⊙ m for EVERY weight, pruned or
    not: w = θ − stop_gradient(θ ⊙ (1 − m))."""
    def masked(params: PyTree, x: jax.Array) -> jax.Array:
        return apply_fn(jax.tree.map(lambda p, m: p - jax.lax.stop_gradient(jnp.where(m, 0.0, p)), params, mask), x)

    return masked
