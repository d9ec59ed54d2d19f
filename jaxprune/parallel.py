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
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
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
# XLA:CPU devices created at least. XLA sizes its intra-op thread pool (which Eigen's matmuls split their work over)
# as max(cores, devices), and Eigen's threaded contraction sums some products in another order with a pool of exactly
# two threads than with one or with three and more (it splits the inner dimension: e.g. the (200 x 64) @ (64 x 200)
# of an MLP's weight gradient). Creating at least 4 devices, whichever the seeds use, gives every layout the same
# pool on machines with up to 4 cores, and numbers equal to those of 1-, 4-, 8- and 16-thread pools
# (tests/test_scale_out.py).
MIN_CPU_DEVICES = 4
_cpu_mesh_devices: int | None = None  # CPU devices per process the seed mesh uses (None: every device)


def cpu_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0))


def use_cpu_cores(num_seeds: int, cores: int | None = None) -> int:
    """Sets XLA:CPU up for a sweep of ``num_seeds`` seeds; call it before the first JAX computation.

    XLA:CPU runs the small ops of one program on essentially one core, so one CPU device leaves the others idle.
    The seed mesh (:func:`seed_mesh`) then spans d CPU devices per process, d the largest divisor of ``num_seeds``
    that is ≤ ``cores`` (default: every core this process may use), and each device computes its own seeds on its
    own core. At least :data:`MIN_CPU_DEVICES` devices are created (the rest stay idle), so that XLA's intra-op
    thread pool, and with it the rounding of every matmul, is the same whatever d is. It also turns on
    :data:`CPU_REGION_ANALYSIS`. Only the CPU backend is affected: on GPU/TPU the mesh is made of the accelerators.
    An explicit ``--xla_force_host_platform_device_count`` in ``XLA_FLAGS`` wins (the mesh spans the devices it
    forces), and so does a JAX that has already computed something (too late to change: nothing is changed).
    Returns d, or 0 when the device count was left alone.
    """
    global _cpu_mesh_devices
    flags = os.environ.get("XLA_FLAGS", "")
    cores = cores or cpu_cores()
    devices = max(d for d in range(1, min(cores, num_seeds) + 1) if num_seeds % d == 0)
    try:
        if FORCED_DEVICE_COUNT not in flags:
            jax.config.update("jax_num_cpu_devices", max(cpu_cores(), devices, MIN_CPU_DEVICES))
    except RuntimeError:  # JAX's backends are already up: XLA_FLAGS would not be read again either
        return 0
    if CPU_REGION_ANALYSIS.split("=")[0] not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {CPU_REGION_ANALYSIS}".strip()
    if FORCED_DEVICE_COUNT in flags:
        return 0
    _cpu_mesh_devices = devices
    return devices


def _on_cloud_tpu_vm() -> bool:
    """True where libtpu is installed and TPU chips are attached (``/dev/accel*`` up to v4, VFIO from v5)."""
    has_chips = bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"))
    return has_chips and importlib.util.find_spec("libtpu") is not None


def seed_mesh() -> Mesh:
    """The 1-D mesh, axis ``'seeds'``, over the devices of every process: all of them, or on CPU after
    :func:`use_cpu_cores` the first d of each process (process by process)."""
    devices = jax.devices()
    if _cpu_mesh_devices is not None and devices[0].platform == "cpu":
        by_process = {}
        for device in devices:
            by_process.setdefault(device.process_index, []).append(device)
        devices = [d for p in sorted(by_process) for d in by_process[p][:_cpu_mesh_devices]]
    return Mesh(np.asarray(devices), (SEED_AXIS,))


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
        if isinstance(leaf, jax.Array) and leaf.sharding.is_equivalent_to(sharding, leaf.ndim):
            return leaf
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


def device_summary(mesh: Mesh | None = None) -> dict:
    """The devices the seed mesh spans (platform, device count, process count), the seeds per vmapped block
    (:func:`seed_block`) and the XLA CPU devices created (whose count sizes XLA:CPU's thread pool); recorded in
    results.json."""
    mesh = seed_mesh() if mesh is None else mesh
    platform = mesh.devices.flat[0].platform
    return {"platform": platform, "devices": int(mesh.size), "processes": jax.process_count(),
            "seed_block": seed_block(platform), "local_devices_created": jax.local_device_count()}


SEED_BLOCKS = {"cpu": 2}  # seeds per vmapped block by platform; others: DEFAULT_SEED_BLOCK
DEFAULT_SEED_BLOCK = 8


def seed_block(platform: str | None = None) -> int:
    """Seeds vmapped together in one block of :func:`seed_map` on ``platform`` (default: JAX's default backend).

    On XLA:CPU vmapping saves no work (the cores are used by the seed mesh instead), so blocks are small; on
    accelerators a block of several seeds fills the device better. A seed's numbers depend on the block size, so
    it is one per platform, not a function of how many seeds a run has."""
    return SEED_BLOCKS.get(platform or jax.default_backend(), DEFAULT_SEED_BLOCK)


def seed_map(fn: Callable, mesh: Mesh, *, in_axes=0, block: int | None = None, blockwise: bool = False,
             one_device: bool = False, on_block: Callable[[int], Any] | None = None) -> Callable:
    """``fn`` (written for ONE seed) lifted to every seed of the mesh: ``seed_map(fn, mesh)(*args)`` returns what
    ``jax.jit(jax.vmap(fn, in_axes))(*args)`` would, with every output's leading (seed) axis sharded over ``mesh``.

    ``in_axes`` is 0 (every argument has a leading seed axis) or a tuple with 0 or None per positional argument
    (None: shared by all seeds, e.g. the dataset or a step count). Unlike ``jit(vmap)``, a seed's result does not
    depend on the layout of the sweep — how many devices or processes there are, how many seeds share a device,
    which seeds run beside it — only on its own inputs and the platform:

    * every device runs the same single-device program on its own seeds (no SPMD partitioning: XLA compiles a
      multi-device program differently, which changes float rounding);
    * that program vmaps ``fn`` over blocks of a fixed size (:func:`seed_block`) and loops over the blocks
      (``lax.map``), padding the last block with copies of the device's last seed, so every seed is computed
      by the same compiled arithmetic whatever the number of seeds;
    * the devices run concurrently (JAX dispatches asynchronously) and their results are assembled into global
      arrays without any communication, so the mesh may span several hosts.

    ``blockwise=True``: ``fn`` takes a whole block (a leading block axis on the per-seed arguments) and returns one,
    for loops whose length the block decides, e.g. training until every network of the block has converged; its
    result for a seed must not depend on the other seeds of the block.

    ``one_device=True``, for programs whose compile takes longer than their work (initialization, evaluation and
    pruning between training runs): every process runs all of its seeds on its first device, so the program is
    compiled once per process, not once per device (XLA:CPU compiles a program anew for every device), and the
    results are then placed over the mesh. The numbers are the same: the program is the same.

    ``on_block(seeds_done)``, if given, is called on the host as each block finishes (a ``jax.debug.callback`` that
    depends on the block's results, so it fires after them), with the number of the block's seeds that are not
    padding: progress from inside one long compiled call. It changes no result, but JAX's persistent compilation
    cache keys a program with a host callback by the callback's address, so such a program compiles anew in every
    process (its cache entries, ~100 KB each, are never hit).
    """
    return SeedMap(fn, mesh, in_axes, block, blockwise, one_device, on_block)


class SeedMap:
    """The callable :func:`seed_map` returns: one jitted single-device program, run on every local device."""

    def __init__(self, fn: Callable, mesh: Mesh, in_axes, block: int | None, blockwise: bool = False,
                 one_device: bool = False, on_block: Callable[[int], Any] | None = None):
        self.fn, self.mesh, self.in_axes, self.blockwise, self.one_device = fn, mesh, in_axes, blockwise, one_device
        self.on_block = on_block
        self.block = block or seed_block(mesh.devices.flat[0].platform)
        self.sharding = seed_sharding(mesh)
        self.local_devices = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
        self.program = jax.jit(self._blocked)
        self.joined_program = jax.jit(self._joined)

    def _axes(self, num_args: int) -> tuple:
        axes = self.in_axes if isinstance(self.in_axes, (tuple, list)) else (self.in_axes,) * num_args
        if len(axes) != num_args or any(a not in (0, None) for a in axes):
            raise ValueError(f"in_axes={self.in_axes!r}: need 0 or None for each of the {num_args} arguments")
        return tuple(axes)

    def _blocked(self, *args):
        """One device's program: ``fn`` vmapped over blocks of ``self.block`` of its seeds, looped over blocks."""
        axes = self._axes(len(args))
        n = next(np.shape(leaf)[0] for a, ax in zip(args, axes) if ax == 0 for leaf in jax.tree.leaves(a))
        blocks = -(-n // self.block)

        def to_blocks(x):
            padded = jnp.concatenate([x, jnp.repeat(x[-1:], blocks * self.block - n, axis=0)])
            return padded.reshape(blocks, self.block, *x.shape[1:])

        def run_block(indexed):
            index, per_seed = indexed
            full = [b if ax == 0 else a for a, b, ax in zip(args, per_seed, axes)]
            out = self.fn(*full) if self.blockwise else jax.vmap(self.fn, in_axes=axes)(*full)
            if self.on_block is not None:
                jax.debug.callback(self._block_done, jnp.minimum(n - index * self.block, self.block),
                                   jax.tree.leaves(out)[0])
            return out

        per_seed = [jax.tree.map(to_blocks, a) if ax == 0 else None for a, ax in zip(args, axes)]
        indices = None if self.on_block is None else jnp.arange(blocks)  # without on_block, the program as before
        out = jax.lax.map(run_block, (indices, per_seed))
        return jax.tree.map(lambda y: y.reshape(blocks * self.block, *y.shape[2:])[:n], out)

    def _block_done(self, seeds_done, _results) -> None:
        self.on_block(int(seeds_done))

    def _joined(self, *args):
        """``one_device``'s program: the per-seed arguments come as one chunk per local device (seeds in mesh
        order); they are joined, computed as one device's seeds, and the results cut back into those chunks."""
        axes = self._axes(len(args))
        joined = [jax.tree.map(lambda *c: jnp.concatenate(c), *a) if ax == 0 else a for a, ax in zip(args, axes)]
        size = next(np.shape(leaf)[0] for a, ax in zip(args, axes) if ax == 0 for leaf in jax.tree.leaves(a[0]))
        out = self._blocked(*joined)
        return [jax.tree.map(lambda y, i=i: y[i * size:(i + 1) * size], out) for i in range(len(self.local_devices))]

    def _per_device(self, arg) -> list:
        """``arg`` as one pytree per local device: the part that device computes on (its seeds, or all of a shared
        argument); each leaf's shards are looked up once."""
        def split(leaf):
            if not isinstance(leaf, jax.Array):
                leaf = jnp.asarray(leaf)
            shards = {s.device: s.data for s in leaf.addressable_shards}
            return [shards[d] if d in shards else jax.device_put(leaf, d) for d in self.local_devices]

        leaves, treedef = jax.tree.flatten(arg)
        per_leaf = [split(leaf) for leaf in leaves]
        return [jax.tree.unflatten(treedef, [p[i] for p in per_leaf]) for i in range(len(self.local_devices))]

    def __call__(self, *args):
        axes = self._axes(len(args))
        args = [shard_seeds(a, self.mesh) if ax == 0 else a for a, ax in zip(args, axes)]
        local = list(zip(*[self._per_device(a) for a in args]))  # [device][argument]
        if self.one_device:  # every device's seeds to the first, one program, each device's results back
            first = self.local_devices[0]
            chunks = [jax.device_put(tuple(per_device), first) if ax == 0 else per_device[0]
                      for ax, *per_device in zip(axes, *local)]
            outs = [jax.device_put(out, d) for out, d in zip(self.joined_program(*chunks), self.local_devices)]
        else:
            outs = [self.program(*device_args) for device_args in local]
        leaves = [jax.tree.leaves(o) for o in outs]
        return jax.tree.unflatten(jax.tree.structure(outs[0]), [
            jax.make_array_from_single_device_arrays(
                (shards[0].shape[0] * self.mesh.size, *shards[0].shape[1:]), self.sharding, list(shards))
            for shards in zip(*leaves)])


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
