"""Placement of the seed axis on the devices of all hosts, multi-host start-up, and the compilation cache.

Every experiment lifts a one-seed function as ``jax.jit(jax.vmap(f))`` over a leading seed axis of its state.
Running it on many devices is a placement decision made once, at the top:

* ``shard_seeds`` splits the seed axis of the state over a 1-D mesh named ``'seeds'`` that spans every device of
  every process, so device ``i`` of ``n`` holds seeds ``[i·S/n, (i+1)·S/n)``;
* ``replicate`` puts shared inputs (the dataset) whole on every device;
* ``jax.jit`` propagates these shardings through the vmapped computation: seeds are independent, so each device
  computes its own seeds and no communication is needed;
* ``to_host`` brings results back as numpy on every process, and ``is_primary`` picks the one that writes files.

Multi-host inputs follow the single-program convention: every process calls these functions with the same global
value, and each materialises only the shards that live on its own devices.
"""
import glob
import importlib.util
import os
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxprune.errors import ConfigError

SEED_AXIS = "seeds"


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
    """Joins this process to a multi-process JAX run; must be called before any other JAX computation.

    With any argument given, starts ``jax.distributed`` with exactly those arguments (CPU processes exchange data
    through gloo collectives). With none, on a Cloud TPU VM, ``jax.distributed.initialize()`` finds the hosts of
    the slice itself (on a one-host slice this forms a group of one process). Anywhere else, and if the
    distributed system is already up, it does nothing: the run is one process.
    """
    if jax.distributed.is_initialized():
        return
    if (coordinator_address, num_processes, process_id) != (None, None, None):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address, num_processes, process_id)
    elif _on_cloud_tpu_vm():
        jax.distributed.initialize()


FORCED_DEVICE_COUNT = "--xla_force_host_platform_device_count"
# Copy insertion with region analysis: lets XLA:CPU update the loop-carried optimizer state of a training scan in
# place instead of copying it every step (17 copies per step of the default MLP's Adam step without it). The
# compiled maths is unchanged: results are bit-identical (tests/test_parallel.py), steps ~25% faster.
CPU_REGION_ANALYSIS = "--xla_cpu_copy_insertion_use_region_analysis=true"


def use_cpu_cores(num_seeds: int, cores: int | None = None) -> int:
    """Sets XLA:CPU up for a sweep of ``num_seeds`` seeds; call it before the first JAX computation.

    XLA:CPU runs the small ops of one program on essentially one core, so one CPU device leaves the others idle.
    This exposes d CPU devices, d the largest divisor of ``num_seeds`` that is ≤ ``cores`` (default: the cores
    this process may use), so :func:`seed_mesh` spans d devices and each computes its own block of seeds on its
    own core. It also turns on :data:`CPU_REGION_ANALYSIS`. Only the CPU backend is affected: on GPU/TPU the mesh
    is made of the accelerators. An explicit ``--xla_force_host_platform_device_count`` in ``XLA_FLAGS`` wins
    (the device count is left alone), and so does a JAX that has already computed something (too late to change:
    nothing is changed). Returns d, or 0 when the device count was left alone.

    Results depend on d only through float rounding (a device computing more than a few seeds batches their
    matmuls differently), which training then amplifies into a different draw; see the README on determinism.
    d > 1 is experimental: jaxlib's batched CPU LAPACK kernels (e.g. an SVD) wait on XLA's intra-op thread pool
    and can deadlock when two devices run them at once (README, "Running on GPUs, TPUs and several hosts").
    """
    flags = os.environ.get("XLA_FLAGS", "")
    cores = cores or len(os.sched_getaffinity(0))
    devices = max(d for d in range(1, min(cores, num_seeds) + 1) if num_seeds % d == 0)
    try:
        if FORCED_DEVICE_COUNT not in flags:
            jax.config.update("jax_num_cpu_devices", devices)
    except RuntimeError:  # JAX's backends are already up: XLA_FLAGS would not be read again either
        return 0
    if CPU_REGION_ANALYSIS.split("=")[0] not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {CPU_REGION_ANALYSIS}".strip()
    return 0 if FORCED_DEVICE_COUNT in flags else devices


def _on_cloud_tpu_vm() -> bool:
    """True where libtpu is installed and TPU chips are attached (``/dev/accel*`` up to v4, VFIO from v5)."""
    has_chips = bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"))
    return has_chips and importlib.util.find_spec("libtpu") is not None


def seed_mesh() -> Mesh:
    """The 1-D mesh over all devices of all processes, with the single axis ``'seeds'``."""
    return Mesh(np.asarray(jax.devices()), (SEED_AXIS,))


def check_num_seeds(num_seeds: int, mesh: Mesh) -> None:
    """Raises ConfigError unless ``num_seeds`` is a positive multiple of the mesh's device count.

    The message names the two nearest valid values ``n·⌊S/n⌋`` (when positive) and ``n·⌊S/n⌋ + n``.
    """
    num_devices = mesh.size
    if num_seeds >= 1 and num_seeds % num_devices == 0:
        return
    below = num_seeds // num_devices * num_devices
    valid = [v for v in (below, below + num_devices) if v >= 1]
    raise ConfigError(
        f"num_seeds={num_seeds} must be a positive multiple of the {num_devices} devices of the seed mesh; "
        f"use num_seeds={' or num_seeds='.join(map(str, valid))}")


def seed_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (seed) axis split over the mesh. Give it as ``out_shardings`` to a jitted per-seed computation whose
    outputs feed the next call: XLA would otherwise replicate outputs that do not depend on the inputs (a fresh
    mask of ones, zero counters), and the next call would compile again for the other layout."""
    return NamedSharding(mesh, PartitionSpec(SEED_AXIS))


def shard_seeds(tree: Any, mesh: Mesh) -> Any:
    """Global arrays with the leading (seed) axis of every leaf split over the mesh axis ``'seeds'``.

    ``tree`` holds the full global value (numpy or jax arrays, the same on every process); each leaf's leading
    size must be a multiple of the device count (ConfigError otherwise).
    """
    for leaf in jax.tree.leaves(tree):
        check_num_seeds(np.shape(leaf)[0], mesh)
    return _place(tree, seed_sharding(mesh))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Global arrays holding the whole of each leaf of ``tree`` on every device of the mesh (e.g. a dataset)."""
    return _place(tree, NamedSharding(mesh, PartitionSpec()))


def is_key(leaf: Any) -> bool:
    """True for an array of typed PRNG keys (``jax.random.key``), which travels as its raw ``key_data``."""
    return isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _place(tree: Any, sharding: NamedSharding) -> Any:
    """Each leaf of ``tree`` (the same global value on every process) laid out by ``sharding``.

    A process builds only the shards on its own devices, cut from its copy of the value, which is what makes the
    result a correct global array when the mesh spans several hosts. PRNG key arrays travel as their key data.
    """
    def place(leaf: Any) -> jax.Array:
        if is_key(leaf):
            return jax.random.wrap_key_data(place(jax.random.key_data(leaf)), impl=jax.random.key_impl(leaf))
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return jax.device_put(leaf, sharding)
        value = np.asarray(leaf)
        return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

    return jax.tree.map(place, tree)


def to_host(tree: Any) -> Any:
    """Numpy copies of the full global value of every leaf, on every process (a collective when multi-host).

    Typed PRNG keys come back as their raw ``jax.random.key_data`` (uint32)."""
    def gather(leaf: Any) -> np.ndarray:
        if is_key(leaf):
            leaf = jax.random.key_data(leaf)
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return multihost_utils.process_allgather(leaf, tiled=True)
        return np.asarray(leaf)

    return jax.tree.map(gather, tree)


def device_summary() -> dict:
    """The devices the seed mesh spans: platform, device count and process count (recorded in results.json,
    since results can differ in float rounding between device counts)."""
    return {"platform": jax.devices()[0].platform, "devices": jax.device_count(), "processes": jax.process_count()}


def is_primary() -> bool:
    """True on process 0, the only process that writes results, figures and logs."""
    return jax.process_index() == 0


def enable_compilation_cache(cache_dir: str | None = None) -> str:
    """Turns on JAX's persistent compilation cache and returns its directory.

    The directory is ``cache_dir`` if given, else ``$JAXPRUNE_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/jaxprune/jax_cache`` (``~/.cache/jaxprune/jax_cache``). Every compiled program is cached,
    however small or quick to compile, so repeated CPU runs skip compilation too. Call it before the first
    ``jax.jit`` call: JAX fixes its cache when it compiles for the first time.
    """
    if cache_dir is None:
        cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        cache_dir = os.environ.get("JAXPRUNE_CACHE_DIR") or os.path.join(cache_home, "jaxprune", "jax_cache")
    cache_dir = os.path.abspath(os.path.expanduser(cache_dir))
    os.makedirs(cache_dir, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return cache_dir
