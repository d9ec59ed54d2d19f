"""What every experiment does the same way: seeds, data on device, model and vmapped initialization, progress."""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxprune import data, masks, models, parallel, train
from jaxprune.config import check_positive_int, seed_ids
from jaxprune.errors import ConfigError


def seed_keys(seed: int, ids) -> jax.Array:
    """Key of seed i = fold_in(key(seed), i) for every id i in ``ids`` (an int n means ids 0..n-1): seed i of a
    sweep is computed from its key alone, so it can be rerun by itself (``config.seed_ids``)."""
    root = jax.random.key(seed)
    ids = jnp.arange(ids) if isinstance(ids, int) else jnp.asarray(ids, jnp.int32)
    return jax.vmap(lambda i: jax.random.fold_in(root, i))(ids)


def init_and_data_keys(keys: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Split each seed's key into (initialization key, data-order key)."""
    pairs = jax.vmap(jax.random.split)(keys)
    return pairs[:, 0], pairs[:, 1]


class BlockProgress:
    """The run's sink for the seeds its compiled :func:`jaxprune.parallel.seed_map` programs finish (their
    ``on_block``): they count toward the :func:`stage` attached with :meth:`to`, if any. A program compiled once
    per run (:meth:`Setup.program`) reports to whichever stage is running."""

    def __init__(self):
        self.advance = None

    def __call__(self, seeds_done: int) -> None:
        if self.advance is not None:
            self.advance(seeds_done)

    @contextlib.contextmanager
    def to(self, advance: Callable[[int], Any]):
        """Within the block, finished seeds count as ``advance(seeds)`` (a :func:`stage`'s)."""
        self.advance = advance
        try:
            yield
        finally:
            self.advance = None


@dataclasses.dataclass(frozen=True)
class Setup:
    """The dataset (host copy, and device copies replicated over the mesh), the model, one key per seed, and
    the mesh whose ``'seeds'`` axis every per-seed array is sharded over (:mod:`jaxprune.parallel`).

    With ``config.data_per_seed`` every seed draws its own dataset on device instead (:func:`init_seeds` puts
    it in ``Seeds.data``): ``dataset`` is then None, ``train_data``/``test_data`` hold the shapes of one seed's
    arrays (``jax.ShapeDtypeStruct``), ``draw`` is the one-seed draw ``key -> data.SeedData`` and ``data_keys``
    the seeds' data keys (:func:`jaxprune.data.data_keys`)."""

    dataset: data.Dataset | None
    train_data: train.Data
    test_data: train.Data
    model: nn.Module
    keys: jax.Array  # [num_seeds]
    mesh: jax.sharding.Mesh
    num_classes: int = 0  # 0 for regression
    draw: Callable | None = None
    data_keys: jax.Array | None = None
    programs: dict = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)
    blocks_done: BlockProgress = dataclasses.field(default_factory=BlockProgress, init=False, repr=False,
                                                   compare=False)

    def program(self, key, build: Callable[[], Any]) -> Any:
        """The run's program ``key`` (a hashable description of it), made by ``build()`` the first time it is asked
        for: a program the run calls again (every IMP round, every method's control) is compiled once per run.
        The programs belong to this setup, so they go when the run does; a setup made from it by
        ``dataclasses.replace`` (another training set, other keys) starts with none, as its programs may close
        over its own data."""
        if key not in self.programs:
            self.programs[key] = build()
        return self.programs[key]

    def shard(self, tree):
        """Put a pytree with a leading seed axis onto the mesh, one block of seeds per device."""
        return parallel.shard_seeds(tree, self.mesh)


def check_batch_size(config, num_examples: int) -> None:
    """ConfigError if a batch is larger than the training set."""
    check_positive_int(config, "batch_size")
    if config.batch_size > num_examples:
        raise ConfigError(
            f"config.batch_size={config.batch_size}: larger than the {num_examples} training examples of "
            f"dataset {config.dataset!r}; use at most {num_examples}"
        )


def setup(config, dataset: data.Dataset | None = None, mesh: jax.sharding.Mesh | None = None) -> Setup:
    """Load the data (unless given), put it on device, build the model and the per-seed keys; the seeds are
    sharded over ``mesh`` (default :func:`jaxprune.parallel.seed_mesh`, every device). With
    ``config.data_per_seed`` nothing is loaded: every seed's data is drawn by :func:`init_seeds`."""
    mesh = parallel.seed_mesh() if mesh is None else mesh
    if config.get("data_per_seed", False):
        draw = functools.partial(data.draw, config=config)
        one = jax.eval_shape(draw, jax.random.key(0))
        num_classes = config.num_classes if one.noise is None else 0
        splits = train.Data(one.x_train, one.y_train), train.Data(one.x_test, one.y_test)
        per_seed = dict(draw=draw, data_keys=data.data_keys(config.data_seed, seed_ids(config)))
    else:
        dataset = data.load(config) if dataset is None else dataset
        to_device = lambda x, y: parallel.replicate(train.Data(x, y), mesh)  # noqa: E731
        splits = to_device(dataset.x_train, dataset.y_train), to_device(dataset.x_test, dataset.y_test)
        num_classes, per_seed = dataset.num_classes, {}
    check_batch_size(config, splits[0].y.shape[0])
    model = models.create(config.model, num_classes or 1, widths=tuple(config.widths),
                          weight_init=config.get("weight_init", "kaiming_normal"))
    select_prunable(config.get("prunable", ""), model, splits[0].x.shape[1:])
    return Setup(dataset, *splits, model=model, keys=seed_keys(config.seed, seed_ids(config)), mesh=mesh,
                 num_classes=num_classes, **per_seed)


def select_prunable(pattern: str, model: nn.Module, feature_shape: tuple[int, ...]) -> None:
    """Apply ``config.prunable`` (:func:`jaxprune.masks.select`); ConfigError, naming the model's kernels, if it
    leaves nothing to prune."""
    masks.select(pattern)
    shapes = jax.eval_shape(lambda: train.init_variables(model, jax.random.key(0), jnp.zeros(feature_shape))[0])
    if not masks.prunable_names(shapes):
        names = [masks.path_name(p) for p, k in jax.tree_util.tree_flatten_with_path(masks.kernels(shapes))[0] if k]
        masks.select("")
        raise ConfigError(f"config.prunable={pattern!r} matches none of the model's kernels: {', '.join(names)}")


def data_size(setup: Setup) -> tuple[int, int]:
    """(n, d): training examples per seed and input features (Π of an example's shape)."""
    shape = setup.train_data.x.shape
    return shape[0], int(np.prod(shape[1:]))


def train_data_of(setup: Setup, seed_data: data.SeedData | None) -> train.Data:
    """The training set a one-seed function trains or scores on: the seed's own (``seed_data``, with
    ``config.data_per_seed``) or, when None, the one the seeds share."""
    return setup.train_data if seed_data is None else train.Data(seed_data.x_train, seed_data.y_train)


class Seeds(NamedTuple):
    """Every seed's initial weights and keys, stacked on a leading seed axis and sharded over the mesh."""

    params: Any
    batch_stats: Any
    init_keys: jax.Array
    order_keys: jax.Array  # data order of training runs
    data: data.SeedData | None = None  # every seed's own dataset (config.data_per_seed), else None: shared


def init_seeds(setup: Setup) -> Seeds:
    """Initialize every seed's model in one call over the seeds; the same weights for every method. With
    ``setup.draw`` (``config.data_per_seed``) every seed's dataset is drawn from its data key in one vmapped call
    on device (no host loop over datasets)."""
    init_keys, order_keys = init_and_data_keys(setup.keys)
    init = lambda k, x: train.init_variables(setup.model, k, x)  # noqa: E731
    lifted = parallel.seed_map(init, setup.mesh, in_axes=(0, None), one_device=True)
    params, batch_stats = lifted(init_keys, jnp.zeros(setup.train_data.x.shape[1:], setup.train_data.x.dtype))
    seed_data = setup.draw and parallel.seed_map(setup.draw, setup.mesh, one_device=True)(setup.data_keys)
    return Seeds(params, batch_stats, *setup.shard((init_keys, order_keys)), seed_data)


def networks(setup: Setup, seeds: Seeds, mask_sets: list) -> tuple[Seeds, Any]:
    """Every seed under each of the C stacked mask sets ([seeds, ...] pytrees) as ONE axis of C · seeds networks,
    network c · seeds + s being seed s under mask set c: (its Seeds, its masks), sharded over the mesh."""
    tile = lambda a: jnp.concatenate([a] * len(mask_sets))  # noqa: E731
    tiled = Seeds(*setup.shard(jax.tree.map(tile, tuple(seeds))))
    return tiled, setup.shard(jax.tree.map(lambda *m: jnp.concatenate(m), *mask_sets))


PROGRESS_SECONDS = 30.0  # long stages log a progress line with an ETA at least this often


class Eta:
    """Progress of ``total`` units of work (e.g. training steps), ``done`` of them before this process started: the
    rate and estimated time left since the first unit timed here."""

    def __init__(self, total: int, done: int = 0, unit: str = "steps"):
        self.total, self.done, self.unit = total, done, unit
        self.start_done, self.start = done, time.perf_counter()
        self.last = self.start

    def due(self, units: int) -> bool:
        """Count ``units`` more done; True when a progress line is due (:data:`PROGRESS_SECONDS` since the last)."""
        self.done += units
        now = time.perf_counter()
        if now - self.last < PROGRESS_SECONDS:
            return False
        self.last = now
        return True

    def __str__(self) -> str:
        elapsed = time.perf_counter() - self.start
        if self.done == self.start_done:
            return f"{elapsed:.0f} s in, ETA after the first of {self.total - self.done} {self.unit}"
        rate = (self.done - self.start_done) / max(elapsed, 1e-9)
        left = (self.total - self.done) / rate
        minutes, seconds = divmod(round(left), 60)
        return f"{rate:.3g} {self.unit}/s, ETA {minutes // 60}:{minutes % 60:02d}:{seconds:02d}"


class Progress:
    """Prints one line per unit of work with the elapsed wall time (flushed, so it shows in logs live);
    silent on every process but the primary."""

    def __init__(self, name: str):
        self.name = name
        self.start = time.perf_counter()

    def __call__(self, message: str) -> None:
        if parallel.is_primary():
            print(f"[{self.name} {time.perf_counter() - self.start:7.1f}s] {message}", flush=True)


@contextlib.contextmanager
def stage(log, what: str, total: int, unit: str):
    """A long stage of ``total`` units: logs ``what`` now and then, until the block ends, a line at least every
    :data:`PROGRESS_SECONDS` (from a heartbeat thread, so also while one long compiled call runs) with the units
    done and an ETA from their rate. Yields ``advance(units=1)``, to call as units finish."""
    eta, finished = Eta(total, unit=unit), threading.Event()
    log(f"{what}: {total} {unit}")

    def heartbeat():
        while not finished.wait(PROGRESS_SECONDS):
            log(f"{what}: {eta.done}/{total} {unit} done, {eta}")

    thread = threading.Thread(target=heartbeat, daemon=True)
    thread.start()
    try:
        yield eta.due
    finally:
        finished.set()
        thread.join()


def staged(log, what: str, items, unit: str):
    """Each of ``items`` in turn, inside a :func:`stage` that counts one unit as each is done."""
    items = list(items)
    with stage(log, what, len(items), unit) as advance:
        for item in items:
            yield item
            advance(1)


def mean_std(values) -> str:
    """'mean ± sd sd' over the finite entries of ``values`` (sd: their standard deviation, ddof 0): the one
    meaning "±" has in every console line, labelled where it is printed."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return "n/a" if values.size == 0 else f"{values.mean():.4f} ± {values.std():.4f} sd"


def range_median(values) -> str:
    """'lo–hi, median m' of integer counts (e.g. each seed's epochs), or 'n' when every entry is n: one short
    console phrase however many seeds there are."""
    values = np.asarray(values).ravel()
    if values.size == 0:
        return "n/a"
    low, high = values.min(), values.max()
    return f"{low}" if low == high else f"{low}–{high}, median {np.median(values):g}"


def named_seeds(ids, shown: int = 5) -> str:
    """'k seed(s): i, j, …' naming at most ``shown`` of the seed ids ``ids`` (a console line stays short at any
    number of seeds; the full list is in results.json)."""
    ids = [int(i) for i in ids]
    more = ", …" if len(ids) > shown else ""
    return f"{len(ids)} seed{'s' if len(ids) != 1 else ''}: {', '.join(map(str, ids[:shown]))}{more}"
