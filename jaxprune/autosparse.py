"""AutoSparse (Liu, Cheng et al. 2024): learn a weight's IRP survival score from its state at initialization.

Iterative rewind pruning (IRP, :mod:`jaxprune.irp`) gives every prunable weight a survival count
c ∈ {0, …, rounds}: the number of rounds it stayed unpruned. AutoSparse regresses the normalized score
y = c / rounds ∈ [0, 1] on per-weight *features* at initialization and, once trained on one network,
scores the weights of other networks at init (the ``'autosparse'`` PaI method, :func:`score`).

Features (one row per prunable weight, columns in this order):

* the entries of ``feature_set`` in the order given: ``'param'`` θ₀ (the init value), ``'grad'``
  ∂L/∂θ at θ₀, L the mean cross-entropy on one data batch (:func:`init_gradients`), and (not the reference's,
  path-aware) ``'synflow'``, the weight's quantile within its layer of the SynFlow score (:func:`path_scores`);
* if ``descriptors``: the layer's depth l / L (l its 0-based position among the L prunable layers in the
  order the forward pass reads them, :func:`execution_order`), log fan_in, log fan_out and its kind
  (0 dense, 1 conv).
  A kernel of shape (*receptive, in, out) has fan_in = Π receptive · in, fan_out = Π receptive · out.

Dataset (:func:`build_dataset`) and its ``.npz`` file (:func:`save_dataset`): rows are ordered by prunable
layer, then by row-major flat index within the layer, with arrays

* ``x`` [R, F] float32 features, ``y`` [R] float32 = survival / rounds,
* ``layer`` [R] int32 the prunable layer's position, ``index`` [R] int64 the flat index within it,
* in the file only: ``source`` a 0-d unicode array holding a JSON object (model, dataset, IRP config, …)
  and ``format`` the integer :data:`FORMAT_VERSION`.

Predictors (:func:`train_predictor`), selected by ``kind``:

* ``'mlp'``: a per-weight network, standardized features → ReLU layers ``hidden`` → score.
* ``'mlp_bn'``: the reference's "fc" predictor, Dense → BatchNorm → ReLU for every width in ``hidden`` (the
  reference: 2→16→64→1024→1024→64→1, i.e. ``hidden=(16, 64, 1024, 1024, 64)``) → score.
* ``'image'``: the reference's "resnet18" predictor, meant for a GPU: each weight ALONE is embedded by a ReLU
  MLP (``hidden``; the reference: 64) and a linear map to 3·s² values, reshaped to one s×s×3 "image" PER WEIGHT
  (s = ``image_size``, 32 in the reference) and passed through a ResNet-18 (:class:`jaxprune.models.resnet.ResNet`,
  stem ``image_width``, 64 in the reference; BatchNorm) with one output. A weight's score depends on its own
  features only; every weight costs a ResNet-18 forward pass.
* ``'backbone'``: NOT the reference's image predictor, a cheap 1-D alternative: the ReLU encoder embeds
  each weight into ``hidden[-1]`` channels; the rows of one layer, in flat-index order, form a sequence that
  passes through :data:`BACKBONE_BLOCKS` pre-activation residual blocks h ← h + conv(relu(conv(relu(h)))) of 1-D
  convolutions (kernel :data:`BACKBONE_KERNEL`, SAME padding); a ReLU and a linear head decode every position to
  a score. So a weight's score may depend on its neighbours in the same layer (for a Dense kernel [in, out]:
  weights leaving the same input unit). The network is fully convolutional: trained on windows of ``window``
  consecutive rows of one layer, it scores a whole layer at once, so :func:`predict` must get the rows of ONE
  layer in flat-index order.

All minimize the mean squared error to y (or, ``objective='rank'``, a pairwise ranking loss within a layer) with
Adam on minibatches sampled by ``lax.scan``; inputs are standardized per feature with the training rows' mean and
standard deviation, stored in the state. The gradient feature is ∂L/∂θ on a batch (:func:`init_gradients`) or, as
the reference, summed over the whole training set in eval mode (:func:`train_set_gradients`).
A trained predictor scores a network at init (:func:`score`) and a :class:`Pruner` prunes it to a sparsity
(:func:`prune`, the ``'autosparse'`` method of :mod:`jaxprune.experiments.masking`): one global threshold (the
reference) or per layer with uniform, ERK or IRP's own per-layer densities (:func:`irp_densities`), in one or
several steps; :func:`select_features` cuts a dataset
built with every feature down to an ablation's columns.
Every function is pure and written for one network; lift it with ``jax.vmap`` over seeds.
"""
from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.extend import core as jax_core

from jaxprune import masks, pai, stats
from jaxprune.errors import ConfigError
from jaxprune.models.resnet import ResNet

PyTree = Any
Dataset = dict[str, Any]
FEATURES = ("param", "grad", "synflow")  # every feature a dataset holds (select_features picks columns)
REFERENCE_FEATURES = ("param", "grad")  # the reference's
DESCRIPTORS = ("depth", "log_fan_in", "log_fan_out", "kind")
KINDS = ("mlp", "mlp_bn", "backbone", "image")
PREDICT_CHUNK = 4096  # 'image' predictor: rows per forward pass in predict (each row is one image)
OBJECTIVES = ("mse", "rank")
GRADIENTS = ("batch", "train_set")
TRAIN_SET_BATCH = 256  # 'train_set' gradient: summed over batches of this size, as the reference
BACKBONE_BLOCKS = 2
BACKBONE_KERNEL = 5
FORMAT_VERSION = 2  # 2: the 'synflow' column
_DATASET_DTYPES = {"x": np.float32, "y": np.float32, "layer": np.int32, "index": np.int64}


def _check_feature_set(feature_set: Sequence[str]) -> tuple[str, ...]:
    """``feature_set`` as a tuple, or ConfigError unless it is a non-empty duplicate-free subset of FEATURES."""
    feature_set = tuple(feature_set)
    if not feature_set or len(set(feature_set)) != len(feature_set) or not set(feature_set) <= set(FEATURES):
        raise ConfigError(
            f"feature_set={feature_set!r} must be a non-empty subset of {FEATURES} without repeats"
        )
    return feature_set


def num_features(feature_set: Sequence[str] = REFERENCE_FEATURES, descriptors: bool = True) -> int:
    """F, the number of feature columns: len(feature_set) plus 4 layer descriptors if ``descriptors``."""
    return len(_check_feature_set(feature_set)) + (len(DESCRIPTORS) if descriptors else 0)


def layer_descriptors(shape: Sequence[int], depth: int, num_layers: int) -> np.ndarray:
    """[depth / num_layers, log fan_in, log fan_out, kind] of a kernel of shape (*receptive, in, out)."""
    receptive = int(np.prod(shape[:-2]))
    fan_in, fan_out = receptive * shape[-2], receptive * shape[-1]
    kind = 0.0 if len(shape) == 2 else 1.0
    return np.array([depth / num_layers, np.log(fan_in), np.log(fan_out), kind], np.float32)


def _first_reads(jaxpr: jax_core.Jaxpr, leaf_of: dict) -> list[int]:
    """Leaf ids of ``leaf_of`` (jaxpr Var -> id) in the order the equations read them (repeats included).

    An equation that calls a sub-jaxpr with its own operands one to one (jit, remat, custom_jvp) is read
    through; any other (scan, while, cond) reads all its operands at once, in operand order.
    """
    reads = []
    for eqn in jaxpr.eqns:
        read = [v for v in eqn.invars if isinstance(v, jax_core.Var) and v in leaf_of]
        subs = [j.jaxpr if isinstance(j, jax_core.ClosedJaxpr) else j for j in eqn.params.values()
                if isinstance(j, (jax_core.Jaxpr, jax_core.ClosedJaxpr))]
        if read and len(subs) == 1 and len(subs[0].invars) == len(eqn.invars):
            inner = {v: leaf_of[o] for o, v in zip(eqn.invars, subs[0].invars) if o in read}
            reads += _first_reads(subs[0], inner)
        else:
            reads += [leaf_of[v] for v in read]
    return reads


def execution_order(
    apply_fn: Callable[[PyTree, jax.Array], jax.Array], params: PyTree, x: jax.Array
) -> tuple[int, ...]:
    """Depth l of every prunable kernel (in ``masks.prunable_leaves`` order): its rank 0..L-1 in the order
    ``apply_fn(params, x)`` first reads it, found by tracing the forward pass to a jaxpr (shapes only).

    Leaf order is alphabetical (``Conv_10`` before ``Conv_2``; a ResNet's blocks before its stem); this is
    the order of computation. Kernels read by the same equation keep leaf order; unread ones come last.
    """
    jaxpr = jax.make_jaxpr(apply_fn)(params, x).jaxpr
    is_prunable = jax.tree.leaves(masks.prunable(params))
    kernel_ids = np.cumsum(is_prunable) - 1
    leaf_of = {v: int(k) for v, keep, k in zip(jaxpr.invars, is_prunable, kernel_ids) if keep}
    first = list(dict.fromkeys(_first_reads(jaxpr, leaf_of)))
    ranked = first + [k for k in range(len(leaf_of)) if k not in first]
    return tuple(int(r) for r in np.argsort(ranked))


def features(
    params: PyTree,
    grads: PyTree | None,
    *,
    feature_set: Sequence[str] = REFERENCE_FEATURES,
    descriptors: bool = True,
    depth: Sequence[int] | None = None,
    synflow: PyTree | None = None,
) -> list[jax.Array]:
    """Per prunable layer (``masks.prunable_leaves`` order): features [*kernel.shape, F] float32.

    Columns: θ₀, ∂L/∂θ and/or the path-aware 'synflow' feature in ``feature_set`` order, then (if
    ``descriptors``) the layer descriptors of :func:`layer_descriptors`. ``grads`` (shaped like params) may be
    None when 'grad' is not requested. 'synflow' is the weight's quantile within its layer, (rank − ½) / n_l with
    average ranks for ties, of the SynFlow score ``synflow`` (shaped like params, :func:`path_scores`): near 0 for
    weights on no input→output path, high for those on many strong paths.
    ``depth`` gives each prunable layer's position in execution order (:func:`execution_order`); None
    takes leaf order, which is the execution order only for models whose layer names sort that way.
    Non-prunable leaves have no rows.
    """
    feature_set = _check_feature_set(feature_set)
    if "grad" in feature_set and grads is None:
        raise ConfigError("feature_set includes 'grad' but grads=None; pass init_gradients(...)")
    if "synflow" in feature_set and synflow is None:
        raise ConfigError("feature_set includes 'synflow' but synflow=None; pass path_scores(...)")
    quantiles = None if synflow is None else jax.tree.map(
        lambda v: (stats.average_ranks(v).reshape(jnp.shape(v)) - 0.5) / max(jnp.size(v), 1), synflow)
    sources = {"param": params, "grad": grads, "synflow": quantiles}
    per_feature = [masks.prunable_leaves(sources[name], params) for name in feature_set]
    kernels = masks.prunable_leaves(params, params)
    depth = range(len(kernels)) if depth is None else depth
    out = []
    for layer, columns in enumerate(zip(*per_feature)):
        shape = jnp.shape(kernels[layer])
        cols = [jnp.asarray(c, jnp.float32) for c in columns]
        if descriptors:
            desc = layer_descriptors(shape, depth[layer], len(kernels))
            cols += [jnp.full(shape, d, jnp.float32) for d in desc]
        out.append(jnp.stack(cols, axis=-1))
    return out


def select_features(dataset: Dataset, feature_set: Sequence[str], descriptors: bool) -> Dataset:
    """A dataset built with every feature (``feature_set=FEATURES, descriptors=True``) cut down to the columns
    :func:`features` gives for ``feature_set`` and ``descriptors``; the other arrays are shared."""
    columns = [FEATURES.index(name) for name in _check_feature_set(feature_set)]
    columns += list(range(len(FEATURES), len(FEATURES) + len(DESCRIPTORS))) if descriptors else []
    width = num_features(FEATURES, True)
    if np.shape(dataset["x"])[-1] != width:
        raise ConfigError(f"dataset x has {np.shape(dataset['x'])[-1]} columns; select_features needs all {width}")
    return {**dataset, "x": dataset["x"][..., columns]}


def init_gradients(apply_fn: Callable[[PyTree, jax.Array], jax.Array], params: PyTree, batch) -> PyTree:
    """∂L/∂θ at ``params``, L = mean over the batch of the cross-entropy of ``apply_fn(params, x)``.

    ``batch`` is ``(x, labels)`` with integer labels [B].
    """
    x, labels = batch

    def loss(p: PyTree) -> jax.Array:
        return optax.softmax_cross_entropy_with_integer_labels(apply_fn(p, x), labels).mean()

    return jax.grad(loss)(params)


def _row_ids(params: PyTree) -> tuple[np.ndarray, np.ndarray]:
    """(layer [R] int32, flat index within the layer [R] int64) of every prunable weight, in row order."""
    sizes = [int(np.prod(np.shape(k))) for k in masks.prunable_leaves(params, params)]
    layer = np.repeat(np.arange(len(sizes), dtype=np.int32), sizes)
    index = np.concatenate([np.arange(n, dtype=np.int64) for n in sizes])
    return layer, index


def path_scores(apply_fn: Callable, params: PyTree, x: jax.Array) -> PyTree:
    """SynFlow scores |θ ⊙ ∂R/∂θ| of ``params`` (``pai.score('synflow', …)``, one shot; zero for weights on no
    input→output path), the input shape from ``x`` [B, ...]."""
    return pai.score("synflow", apply_fn, params, (x[:1], jnp.zeros((1,), jnp.int32)), None)


def build_dataset(params: PyTree, grads: PyTree | None, survival: PyTree, rounds: int, **feature_kwargs) -> Dataset:
    """One row per prunable weight: x = its features, y = survival / rounds (see the module docstring).

    ``survival`` is shaped like params with counts in 0..rounds; non-prunable leaves are ignored.
    ``feature_kwargs`` go to :func:`features`. ``layer`` and ``index`` depend only on the shapes (numpy);
    under ``jit``/``vmap`` JAX stores ``index`` as int32 unless x64 is enabled.
    """
    if rounds < 1:
        raise ConfigError(f"rounds={rounds!r} must be a positive integer (number of IRP rounds)")
    feats = features(params, grads, **feature_kwargs)
    x = jnp.concatenate([f.reshape(-1, f.shape[-1]) for f in feats])
    counts = masks.prunable_leaves(survival, params)
    y = jnp.concatenate([jnp.ravel(c) for c in counts]).astype(jnp.float32) / rounds
    layer, index = _row_ids(params)
    return dict(x=x, y=y, layer=layer, index=index)


def save_dataset(path: str, dataset: Dataset, source: dict) -> None:
    """Writes ``dataset`` and ``source`` (JSON-serializable) to the ``.npz`` file ``path`` (module docstring)."""
    missing = set(_DATASET_DTYPES) - set(dataset)
    if missing:
        raise ConfigError(f"dataset is missing keys {sorted(missing)}; needs {sorted(_DATASET_DTYPES)}")
    arrays = {k: np.asarray(dataset[k], dtype) for k, dtype in _DATASET_DTYPES.items()}
    with open(path, "wb") as f:
        np.savez(f, **arrays, source=np.array(json.dumps(source)), format=np.array(FORMAT_VERSION))


def load_dataset(path: str) -> tuple[Dataset, dict]:
    """(dataset, source) from a file written by :func:`save_dataset`."""
    with np.load(path, allow_pickle=False) as f:
        version = int(f["format"]) if "format" in f else None
        if version != FORMAT_VERSION:
            raise ConfigError(f"{path}: AutoSparse dataset format={version!r}; this code reads {FORMAT_VERSION}")
        return {k: f[k] for k in _DATASET_DTYPES}, json.loads(str(f["source"]))


class ScoreNet(nn.Module):
    """[N, W, F] standardized features -> [N, W] scores: ReLU encoder, residual 1-D conv blocks, linear head.

    With ``conv_blocks = 0`` this is the per-weight MLP (the final ReLU is then a no-op); ``batch_norm`` puts a
    BatchNorm between every hidden Dense and its ReLU (the reference's "fc" predictor; batch statistics when
    ``train``, running averages otherwise).
    """

    hidden: tuple[int, ...]
    conv_blocks: int
    batch_norm: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        for width in self.hidden:
            x = nn.Dense(width)(x)
            if self.batch_norm:
                x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
            x = nn.relu(x)
        for _ in range(self.conv_blocks):
            h = nn.Conv(self.hidden[-1], (BACKBONE_KERNEL,), padding="SAME")(nn.relu(x))
            x = x + nn.Conv(self.hidden[-1], (BACKBONE_KERNEL,), padding="SAME")(nn.relu(h))
        return nn.Dense(1)(nn.relu(x))[..., 0]


class ImageScoreNet(nn.Module):
    """[N, W, F] standardized features -> [N, W] scores: a ReLU MLP ``hidden`` and a linear map to 3·s² per row,
    one s×s×3 image per row, a ResNet-18 of stem ``width`` with one output (the reference's "resnet18")."""

    hidden: tuple[int, ...]
    image_size: int
    width: int

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        s = self.image_size
        images = nn.Dense(3 * s * s)(x).reshape(-1, s, s, 3)
        stages = tuple((self.width * 2 ** i, 2) for i in range(4))  # ResNet-18: BasicBlock [2, 2, 2, 2]
        return ResNet(self.width, stages, 1)(images, train).reshape(x.shape[:-1])


@struct.dataclass
class PredictorState:
    """A trained predictor: network variables ({'params'} and, for 'mlp_bn', {'batch_stats'}), feature
    standardization (mean, std [F]) and static config (``gradient``: how its gradient feature is taken)."""

    params: PyTree
    mean: jax.Array
    std: jax.Array
    kind: str = struct.field(pytree_node=False)
    hidden: tuple[int, ...] = struct.field(pytree_node=False)
    feature_set: tuple[str, ...] = struct.field(pytree_node=False)
    descriptors: bool = struct.field(pytree_node=False)
    gradient: str = struct.field(pytree_node=False, default="batch")
    image: tuple[int, int] = struct.field(pytree_node=False, default=(32, 64))  # 'image': (size, ResNet width)

    @property
    def network(self) -> nn.Module:
        if self.kind == "image":
            return ImageScoreNet(self.hidden, *self.image)
        return ScoreNet(self.hidden, BACKBONE_BLOCKS if self.kind == "backbone" else 0, self.kind == "mlp_bn")


def standardization(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-column (mean, std) of x [R, F]; a column whose std ≤ 1e-6 |mean| is constant and gets std 1."""
    mean, std = jnp.mean(x, axis=0), jnp.std(x, axis=0)
    return mean, jnp.where(std > 1e-6 * jnp.abs(mean), std, 1.0)


def window_sampler(layer: jax.Array, index: jax.Array, window: int) -> Callable[[jax.Array, int], jax.Array]:
    """A function (key, num) -> ``num`` start rows r drawn uniformly from those whose rows r .. r+window-1
    are consecutive weights of one layer (same ``layer``, ``index`` rising by 1).

    Layers shorter than ``window`` are never drawn. The O(R) scan for valid starts runs once, here.
    """
    last = window - 1
    valid = (layer[last:] == layer[: layer.size - last]) & (index[last:] - index[: index.size - last] == last)
    cumulative = jnp.cumsum(valid, dtype=jnp.int32)  # cumulative[r] = number of valid starts <= r

    def sample(key: jax.Array, num: int) -> jax.Array:
        draws = jax.random.randint(key, (num,), 0, cumulative[-1])  # draw d picks the (d+1)-th valid start
        return jnp.searchsorted(cumulative, draws, side="right")

    return sample


@functools.partial(
    jax.jit,
    static_argnames=("kind", "hidden", "steps", "batch_size", "feature_set", "descriptors", "window", "objective",
                     "gradient", "image"),
)
def train_predictor(
    dataset: Dataset,
    key: jax.Array,
    *,
    kind: str = "mlp",
    hidden: tuple[int, ...] = (64, 64),
    steps: int = 2000,
    batch_size: int = 4096,
    learning_rate: float = 1e-3,
    feature_set: tuple[str, ...] = REFERENCE_FEATURES,
    descriptors: bool = True,
    window: int = 64,
    objective: str = "mse",
    gradient: str = "batch",
    image: tuple[int, int] = (32, 64),
) -> PredictorState:
    """Fits a predictor y ≈ f((x - mean) / std) by Adam on the mean squared error, ``steps`` minibatches.

    ``objective='rank'``: instead of the squared error, the pairwise logistic (RankNet) loss within a layer,
    mean over the pairs (i, π(i)) of the minibatch (π a random permutation) that share a layer and differ in y of
    log(1 + exp(−sign(y_i − y_j)(f_i − f_j))): only the order of the scores within each layer is learned, which is
    all a layerwise allocation uses. ``gradient`` is only recorded (how the dataset's gradient column was taken).
    ``image`` = (image size s, ResNet stem width) of the 'image' predictor.

    ``feature_set``/``descriptors`` must be those the dataset was built with (they define F and are used
    again by :func:`score`). 'mlp' samples ``batch_size`` rows uniformly; 'backbone' samples
    ``batch_size // window`` windows of ``window`` consecutive rows of one layer (see :func:`window_sampler`).
    """
    x, y = jnp.asarray(dataset["x"], jnp.float32), jnp.asarray(dataset["y"], jnp.float32)
    span = check_predictor_options(kind, objective, gradient, hidden, x.shape, feature_set, descriptors, window)
    mean, std = standardization(x)
    x = (x - mean) / std
    state = PredictorState(None, mean, std, kind, tuple(hidden), tuple(feature_set), descriptors, gradient,
                           tuple(image))
    net, optimizer = state.network, optax.adam(learning_rate)
    init_key, key = jax.random.split(key)
    variables = net.init(init_key, x[None, :span])
    layer = jnp.asarray(dataset["layer"])
    sample_starts = window_sampler(layer, jnp.asarray(dataset["index"]), span)
    loss_fn = predictor_loss(net, objective, x, y, layer)
    return state.replace(params=optimized(loss_fn, variables, optimizer, sample_starts, span, batch_size,
                                          jax.random.split(key, steps)))


def check_predictor_options(kind: str, objective: str, gradient: str, hidden: tuple[int, ...], x_shape: tuple,
                            feature_set: tuple[str, ...], descriptors: bool, window: int) -> int:
    """The rows one sample of :func:`train_predictor` covers (``window`` for 'backbone', else 1); ConfigError
    naming the option if ``kind``, ``objective``, ``gradient``, ``hidden``, the dataset's shape ``x_shape`` (which
    must be [R, F] for ``feature_set``/``descriptors``) or ``window`` is not one it takes."""
    if kind not in KINDS:
        raise ConfigError(f"kind={kind!r} is unknown; allowed: {', '.join(KINDS)}")
    if objective not in OBJECTIVES or gradient not in GRADIENTS:
        raise ConfigError(f"objective={objective!r}, gradient={gradient!r}: allowed {OBJECTIVES}, {GRADIENTS}")
    if not hidden or min(hidden) < 1:
        raise ConfigError(f"hidden={hidden!r} must be a non-empty tuple of positive layer widths")
    width = num_features(feature_set, descriptors)
    if len(x_shape) != 2 or x_shape[1] != width:
        raise ConfigError(
            f"dataset x has shape {x_shape}; feature_set={feature_set!r}, descriptors={descriptors} need [R, {width}]"
        )
    span = window if kind == "backbone" else 1
    if not 1 <= span <= x_shape[0]:
        raise ConfigError(f"window={window!r} must be between 1 and the number of rows {x_shape[0]}")
    return span


def predictor_loss(net: nn.Module, objective: str, x: jax.Array, y: jax.Array, layer: jax.Array) -> Callable:
    """The loss ``(params, stats, rows, pair_key) -> (loss, batch-stat updates)`` of :func:`train_predictor` on the
    rows ``rows`` of (standardized) ``x``, f = net(x[rows]) in training mode: 'mse' mean((f − y[rows])²); 'rank'
    the mean over the pairs (i, π(i)) (π = permutation(pair_key)) in one ``layer`` with y_i ≠ y_π(i) of
    log(1 + exp(−sign(y_i − y_π(i))(f_i − f_π(i)))) (0 if there is no such pair)."""

    def loss_fn(p: PyTree, stats: PyTree, rows: jax.Array, pair_key: jax.Array):
        out, updates = net.apply({"params": p, **stats}, x[rows], train=True, mutable=list(stats))
        if objective == "mse":
            return jnp.mean((out - y[rows]) ** 2), updates
        f, t, group = out.ravel(), y[rows].ravel(), layer[rows].ravel()
        j = jax.random.permutation(pair_key, f.size)
        valid = (group == group[j]) & (t != t[j])
        pair_loss = jax.nn.softplus(-jnp.sign(t - t[j]) * (f - f[j]))
        return jnp.sum(jnp.where(valid, pair_loss, 0.0)) / jnp.maximum(jnp.sum(valid), 1), updates

    return loss_fn


def optimized(loss_fn: Callable, variables: PyTree, optimizer: optax.GradientTransformation, sample_starts: Callable,
              span: int, batch_size: int, step_keys: jax.Array) -> PyTree:
    """``variables`` ({'params', **batch stats}) after one ``optimizer`` step on ``loss_fn`` per key of
    ``step_keys`` (a ``lax.scan``): step t splits its key into (sample key, pair key) and takes the gradient on the
    rows of ``max(batch_size // span, 1)`` samples of ``span`` consecutive rows, their starts drawn by
    ``sample_starts(sample key, count)`` (:func:`window_sampler`)."""
    offsets = jnp.arange(span)

    def step(carry, step_key):
        p, stats, opt_state = carry
        sample_key, pair_key = jax.random.split(step_key)
        starts = sample_starts(sample_key, max(batch_size // span, 1))
        grads, stats = jax.grad(loss_fn, has_aux=True)(p, stats, starts[:, None] + offsets, pair_key)
        updates, opt_state = optimizer.update(grads, opt_state, p)
        return (optax.apply_updates(p, updates), stats, opt_state), None

    params, stats = variables["params"], {k: v for k, v in variables.items() if k != "params"}
    (params, stats, _), _ = jax.lax.scan(step, (params, stats, optimizer.init(params)), step_keys)
    return {"params": params, **stats}


def predict(state: PredictorState, x: jax.Array) -> jax.Array:
    """Scores [R] of feature rows x [R, F]. For 'backbone', x must be ONE layer's rows in flat-index order."""
    if x.shape[-1] != state.mean.shape[0]:
        raise ConfigError(f"x has {x.shape[-1]} features; the predictor was trained on {state.mean.shape[0]}")
    x = (x - state.mean) / state.std
    if state.kind != "image":
        return state.network.apply(state.params, x[None])[0]
    size = min(PREDICT_CHUNK, x.shape[0])  # one image per row: at most PREDICT_CHUNK rows at a time
    chunks = -(-x.shape[0] // size)
    padded = jnp.concatenate([x, jnp.zeros((chunks * size - x.shape[0], x.shape[1]), x.dtype)])
    out = jax.lax.map(lambda c: state.network.apply(state.params, c[None])[0], padded.reshape(chunks, -1, x.shape[1]))
    return out.reshape(-1)[: x.shape[0]]


def train_set_gradients(apply_fn: Callable[[PyTree, jax.Array], jax.Array], params: PyTree, data,
                        batch_size: int = TRAIN_SET_BATCH) -> PyTree:
    """Σ_b ∂L_b/∂θ over the whole training set ``data = (x, labels)`` in batches of ``batch_size`` in order (the
    last one partial), L_b the mean cross-entropy of batch b: the reference's gradient feature (``apply_fn`` in
    eval mode). Batches run one at a time in ``lax.scan``; padding examples have weight 0."""
    x, labels = data
    n = x.shape[0]
    batches = -(-n // batch_size)
    pad = batches * batch_size - n
    xs = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)]).reshape(batches, batch_size, *x.shape[1:])
    ys = jnp.concatenate([labels, jnp.zeros((pad,), labels.dtype)]).reshape(batches, batch_size)
    real = (jnp.arange(batches * batch_size) < n).reshape(batches, batch_size)
    weights = real / jnp.sum(real, axis=1, keepdims=True)

    def add(total, batch):
        bx, by, w = batch
        loss = lambda p: jnp.sum(w * optax.softmax_cross_entropy_with_integer_labels(apply_fn(p, bx), by))  # noqa: E731
        return jax.tree.map(jnp.add, total, jax.grad(loss)(params)), None

    return jax.lax.scan(add, jax.tree.map(jnp.zeros_like, params), (xs, ys, weights))[0]


def score(state: PredictorState, apply_fn: Callable, params: PyTree, batch, key: jax.Array,
          grads: PyTree | None = None) -> PyTree:
    """AutoSparse PaI scores, shaped like params: predicted survival score on prunable leaves, 0 elsewhere.

    Features are those the predictor was trained on, gradients ``grads`` if given, else from
    :func:`init_gradients` on ``batch``; depths from :func:`execution_order`. Deterministic: ``key`` is unused,
    kept for the common PaI signature.
    """
    del key
    if grads is None and "grad" in state.feature_set:
        grads = init_gradients(apply_fn, params, batch)
    depth = execution_order(apply_fn, params, batch[0]) if state.descriptors else None
    synflow = path_scores(apply_fn, params, batch[0]) if "synflow" in state.feature_set else None
    feats = features(params, grads, feature_set=state.feature_set, descriptors=state.descriptors, depth=depth,
                     synflow=synflow)
    predicted = iter([predict(state, f.reshape(-1, f.shape[-1])).reshape(f.shape[:-1]) for f in feats])
    leaves, treedef = jax.tree.flatten(params)
    is_prunable = jax.tree.leaves(masks.prunable(params))
    return jax.tree.unflatten(
        treedef, [next(predicted) if keep else jnp.zeros_like(p) for p, keep in zip(leaves, is_prunable)]
    )


@struct.dataclass
class SurvivalAllocation:
    """How IRP spreads a density over the layers, read off source survival counts (:func:`survival_allocation`).

    ``kept`` [S, R + 2, L]: for each source seed, prunable layer l's kept count K_l(r) = #{c ≥ r} for
    r = 0 … R, then 0; ``depth`` [L]: each layer's relative depth (execution order) in [0, 1].
    """

    kept: jax.Array
    depth: jax.Array


def survival_allocation(survival: Sequence[np.ndarray], rounds: int, depth: Sequence[int]) -> SurvivalAllocation:
    """:class:`SurvivalAllocation` of survival counts ``survival`` (one [S, *shape] array per prunable layer, leaf
    order; c ∈ 0..rounds) and the layers' execution-order depths ``depth`` (:func:`execution_order`)."""
    per_round = [[np.sum(np.reshape(c, (c.shape[0], -1)) >= r, axis=1) for r in range(rounds + 1)] for c in survival]
    kept = np.transpose(np.array(per_round, np.float32), (2, 1, 0))  # [S, R + 1, L]
    kept = np.concatenate([kept, np.zeros_like(kept[:, :1])], axis=1)
    return SurvivalAllocation(jnp.asarray(kept), jnp.asarray(np.asarray(depth) / max(len(depth) - 1, 1), jnp.float32))


def irp_densities(allocation: SurvivalAllocation, density) -> jax.Array:
    """Per-layer densities [L] (source leaf order) that IRP reaches at total ``density`` (may be traced).

    For one seed, with K(r) = Σ_l K_l(r) the total kept after r rounds and k = density · Σ_l n_l: where
    K(r+1) ≤ k ≤ K(r), K_l = K_l(r+1) + t (K_l(r) − K_l(r+1)), t = (k − K(r+1)) / (K(r) − K(r+1)) — the expected
    layer counts of IRP's mask when the weights pruned in the round that crosses k are kept at random — and below
    the last round K_l = K_l(R) k / K(R). d_l = K_l / n_l, averaged over the source seeds; Σ_l d_l n_l = k.
    """
    kept = allocation.kept
    sizes = kept[0, 0]
    k = jnp.asarray(density, jnp.float32) * jnp.sum(sizes)

    def one_seed(table):  # table [R + 2, L], rows in decreasing total: interpolate along increasing totals
        totals = jnp.sum(table, axis=1)[::-1]
        return jax.vmap(lambda column: jnp.interp(k, totals, column[::-1]), in_axes=1)(table)

    return jnp.mean(jax.vmap(one_seed)(kept), axis=0) / sizes


def transfer_allocation(densities: jax.Array, source_depth: jax.Array, target_depth: Sequence[int]) -> jax.Array:
    """Source per-layer densities [Ls] as weights for a target's L layers: linear interpolation in relative depth
    (execution order; identity when the layers match). ``masks.layer_densities`` rescales them to the total."""
    order = jnp.argsort(source_depth)
    target = jnp.asarray(target_depth, jnp.float32) / max(len(target_depth) - 1, 1)
    return jnp.interp(target, source_depth[order], densities[order])


ALLOCATIONS = ("global", "uniform", "erk", "irp")


@struct.dataclass
class Pruner:
    """A trained predictor and how it prunes (:func:`prune`): ``allocation`` 'global' (one threshold over every
    prunable weight, the reference's rule) or layerwise with per-layer densities 'uniform', 'erk' or 'irp' (those
    IRP reaches, :func:`irp_densities` of ``survival``), scores ranked within each layer; ``iterations`` T ≥ 1
    pruning steps."""

    predictor: PredictorState
    survival: SurvivalAllocation | None = None
    allocation: str = struct.field(pytree_node=False, default="global")
    iterations: int = struct.field(pytree_node=False, default=1)


def _step_mask(pruner: Pruner, scores: PyTree, params: PyTree, sparsity, depth) -> PyTree:
    """Mask keeping the top scores at ``sparsity`` under ``pruner.allocation``."""
    if pruner.allocation == "global":
        return masks.from_scores(scores, params, sparsity)
    allocation = pruner.allocation
    if allocation == "irp":
        if pruner.survival is None:
            raise ConfigError("allocation='irp' needs the source IRP's survival_allocation(...)")
        density = 1.0 - jnp.asarray(sparsity, jnp.float32)
        allocation = transfer_allocation(irp_densities(pruner.survival, density), pruner.survival.depth, depth)
    return masks.from_scores(scores, params, sparsity, "layerwise", allocation)


def prune(
    pruner: Pruner,
    apply_fn: Callable,
    params: PyTree,
    batches,
    sparsity: float | jax.Array,
    *,
    invert: bool = False,
    train_data=None,
) -> PyTree:
    """AutoSparse mask: keep the weights with the highest predicted survival score (:func:`score`).

    ``batches = (x, y)`` [B, batch, ...] as for :func:`jaxprune.pai.prune`, merged into one batch of B·batch
    examples, so the gradient feature is ∂L/∂θ of the mean loss over all of them; for a predictor whose
    ``gradient`` is 'train_set', :func:`train_set_gradients` of ``train_data`` (x, labels) instead.
    ``invert`` keeps the lowest.
    With ``pruner.iterations`` = T > 1 (iterative AutoSparse, as iterative SynFlow / SNIP-it): step t = 1..T
    scores θ ⊙ m_{t−1} (the gradient feature recomputed on the masked network, survivors' θ₀ unchanged), keeps the
    top survivors at density d^(t/T) (d = 1 − sparsity; the last step exactly d) and intersects with m_{t−1}.
    """
    batch = jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:]), batches)
    state = pruner.predictor
    sign = -1.0 if invert else 1.0
    depth = execution_order(apply_fn, params, batch[0]) if pruner.allocation == "irp" else None
    if pruner.allocation not in ALLOCATIONS or pruner.iterations < 1:
        raise ConfigError(f"Pruner allocation={pruner.allocation!r} must be one of {', '.join(ALLOCATIONS)} and "
                          f"iterations={pruner.iterations!r} >= 1")
    density = 1.0 - jnp.asarray(sparsity, jnp.float32)
    mask = masks.ones(params)
    if state.gradient == "train_set" and train_data is None:
        raise ConfigError("the predictor's gradient feature is 'train_set': prune(..., train_data=(x, labels))")
    for t in range(1, pruner.iterations + 1):
        masked = masks.apply(params, mask)
        grads = train_set_gradients(apply_fn, masked, train_data) if state.gradient == "train_set" else None
        scores = jax.tree.map(lambda s: sign * s, score(state, apply_fn, masked, batch, None, grads))
        step_sparsity = sparsity if t == pruner.iterations else 1.0 - density ** (t / pruner.iterations)
        new = _step_mask(pruner, masks.restrict(scores, mask), params, step_sparsity, depth)
        mask = jax.tree.map(jnp.logical_and, new, mask)
    return mask
