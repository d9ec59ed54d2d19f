"""Many seeds at once on one machine: vmapped S seeds vs a per-seed loop, achieved FLOP/s vs the matmul peak, and
memory per seed, all measured side by side in one run.

Workload: the default IRP config's training (``configs/irp.py``: MLP 40-200-200-10 on MNIST-1D, batch 64, Adam
lr 1e-3, dense mask) as :func:`jaxprune.train.train` for ``--epochs`` epochs, one compiled program per call.

* loop: ``jit(train)`` for one seed on one device, compiled once and called once per seed (inputs pre-sliced,
  outputs awaited only at the end, so dispatch overlaps compute); vmapped: ``jit(vmap(train))`` over the first S
  seeds on that one device; sharded: the CLI's :func:`jaxprune.parallel.seed_map` (one single-device program per
  device over fixed blocks of seeds) with the seeds split over the process's CPU devices (one per core,
  set up as the CLI's ``--cpu_devices=0`` does, :func:`jaxprune.parallel.use_cpu_cores`). Rates are seed-steps/s
  (S x optimizer steps / wall seconds), median [min, max] over ``--repeats`` interleaved timed calls of each,
  after a compile call; CPU-µs per seed-step is the process CPU time (all threads) per seed-step.
* FLOPs per seed-step: XLA's count, ``jit(vmap(train_step)).lower(...).compile().cost_analysis()['flops'] / S``
  (one step; a scan body is counted once, not per iteration), beside the hand count of the matmuls:
  forward 2·B·P, weight gradients 2·B·P, input gradients 2·B·(P − d·w₁) (none for the input layer), so
  2·B·(3P − d·w₁) with P = Σ fan_in·fan_out of the kernels, B the batch, d·w₁ the first kernel.
* matmul peak: per repeat, the best over n in ``--matmul-sizes`` of timed chains of n x n float32 matmuls, timed
  before and after the training runs of the same process; "small matmul" is the step's largest matmul shape,
  [S, B, w] @ [S, w, w] batched over seeds, chained the same way.
* memory: ``compile().memory_analysis()`` of the vmapped program: argument + output + temporary − aliased bytes;
  per seed = total / S, and the marginal cost of a seed = (total(S) − total(S₁)) / (S − S₁) against the first S.

Run: ``python benchmarks/bench_seeds.py`` (about 3 minutes on 2 busy cores); ``--smoke`` is a seconds-long check.
"""
from __future__ import annotations

import argparse
import functools
import importlib.util
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxprune import data, masks, parallel, train
from jaxprune.experiments import common

IRP_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "irp.py"


def irp_config(**overrides):
    """The default IRP config (``configs/irp.py``) with ``overrides``."""
    spec = importlib.util.spec_from_file_location("irp_config", IRP_CONFIG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.update(overrides)
    return config


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of all this process's threads) of one call of ``fn``, waited on until its
    outputs are ready. On a shared machine CPU time is the steadier figure: other jobs stretch wall time."""
    wall, cpu = time.perf_counter(), time.process_time()
    jax.block_until_ready(fn())
    return time.perf_counter() - wall, time.process_time() - cpu


def wall_times(fn: Callable[[], object], repeats: int) -> list[float]:
    """Wall seconds of each of ``repeats`` calls of ``fn``."""
    return [timed(fn)[0] for _ in range(repeats)]


def spread(values: Sequence[float], fmt: str = ".0f") -> str:
    """'median [min, max]' of ``values``."""
    return f"{statistics.median(values):{fmt}} [{min(values):{fmt}}, {max(values):{fmt}}]"


def loadavg() -> str:
    """The 1/5/15-minute load averages (other jobs sharing the cores) and the core count."""
    with open("/proc/loadavg") as f:
        return f"load average {' '.join(f.read().split()[:3])} on {os.cpu_count()} cores"


class Workload(NamedTuple):
    """The data, model, optimizer and initial weights of every seed count measured (the largest; seed i is the
    same network in every sweep, see :func:`jaxprune.experiments.common.seed_keys`), and the one-seed run."""

    config: object  # ml_collections.ConfigDict
    setup: common.Setup
    seeds: common.Seeds
    tx: object
    steps: int  # optimizer steps per seed in one run
    run: Callable  # (params, batch_stats, order key, data) -> (final params, epoch metrics), one seed


def workload(args: argparse.Namespace, dataset) -> Workload:
    """Dense training of the IRP config's model for ``args.epochs`` epochs, for up to ``max(args.seeds)`` seeds."""
    config = irp_config(num_seeds=max(args.seeds), **args.overrides)
    setup = common.setup(config, dataset)
    spe = train.steps_per_epoch(setup.train_data.x.shape[0], config.batch_size)
    tx = train.optimizer_from_config(config, spe)

    def run(params, batch_stats, key, data):
        state = train.init_state(params, batch_stats, tx)
        state, metrics, _ = train.train(state, masks.ones(params), data, key, model=setup.model, tx=tx,
                                        epochs=args.epochs, batch_size=config.batch_size)
        return state.params, metrics
    return Workload(config, setup, common.init_seeds(setup), tx, args.epochs * spe, run)


def matmul_flops(params_one_seed, batch_size: int) -> int:
    """Hand count of one step's matmul FLOPs for a ReLU MLP: 2·B·(3P − d·w₁) (see the module docstring)."""
    kernels = masks.prunable_leaves(params_one_seed, params_one_seed)
    total = sum(k.size for k in kernels)
    return 2 * batch_size * (3 * total - kernels[0].size)


def step_flops(work: Workload) -> float:
    """XLA's FLOP count of one vmapped masked Adam step over all seeds, divided by the number of seeds."""
    setup, tx, batch_size = work.setup, work.tx, work.config.batch_size
    num_seeds = work.seeds.order_keys.shape[0]
    (params, batch_stats, _), _ = jax.device_put(first_seeds(work, num_seeds), jax.devices()[0])  # one device
    step = lambda state, mask, x, y: train.train_step(state, mask, x, y, model=setup.model, tx=tx)  # noqa: E731
    states = jax.vmap(train.init_state, in_axes=(0, 0, None))(params, batch_stats, tx)
    x = jnp.zeros((num_seeds, batch_size) + setup.train_data.x.shape[1:], setup.train_data.x.dtype)
    y = jnp.zeros((num_seeds, batch_size), setup.train_data.y.dtype)
    compiled = jax.jit(jax.vmap(step)).lower(states, jax.vmap(masks.ones)(params), x, y).compile()
    return compiled.cost_analysis()["flops"] / num_seeds


def program_bytes(compiled) -> int:
    """Bytes a compiled program holds at its peak: arguments + outputs + temporaries − outputs aliasing inputs."""
    m = compiled.memory_analysis()
    return m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes


@functools.partial(jax.jit, static_argnums=2)
def _matmul_chain(x: jax.Array, w: jax.Array, iterations: int) -> jax.Array:
    return jax.lax.fori_loop(0, iterations, lambda _, x: jnp.matmul(x, w), x)


def matmul_rate(x_shape: tuple, repeats: int, iterations: int) -> list[float]:
    """GFLOP/s of each of ``repeats`` timed runs of x ← x @ w, ``iterations`` times in one compiled loop.

    x: [*batch, m, n], w: [*batch, n, n] (batched over the leading axes, as vmapped seeds are); w = 1/n keeps x
    at ones, and the loop-carried x stops XLA from hoisting the matmul out of the loop.
    """
    n = x_shape[-1]
    x, w = jnp.ones(x_shape, jnp.float32), jnp.full(x_shape[:-2] + (n, n), 1.0 / n, jnp.float32)
    jax.block_until_ready(_matmul_chain(x, w, iterations))
    flops = 2 * np.prod(x_shape) * n * iterations
    return [flops / t / 1e9 for t in wall_times(lambda: _matmul_chain(x, w, iterations), repeats)]


def matmul_peak(sizes: Sequence[int], repeats: int) -> list[float]:
    """GFLOP/s of square float32 matmul chains, each run the best over ``sizes`` (XLA:CPU is fastest at sizes
    that fit the caches, not at the largest): the machine's practical peak."""
    rates = [matmul_rate((n, n), repeats, iterations=max(4, 4 * (2048 // n) ** 3 // 8)) for n in sizes]
    return [max(run) for run in zip(*rates)]


@jax.jit
def _seed(tree, i: jax.Array):
    return jax.tree.map(lambda leaf: leaf[i], tree)


def first_seeds(work: Workload, num_seeds: int):
    """Host copies of the first ``num_seeds`` seeds' (params, batch_stats, order keys) and of the training data."""
    params, batch_stats, keys = parallel.to_host((work.seeds.params, work.seeds.batch_stats, work.seeds.order_keys))
    keys = jax.random.wrap_key_data(keys, impl=jax.random.key_impl(work.seeds.order_keys))
    seeds = jax.tree.map(lambda leaf: leaf[:num_seeds], (params, batch_stats, keys))
    return seeds, train.Data(*parallel.to_host(tuple(work.setup.train_data)))


def measure(work: Workload, num_seeds: int, args: argparse.Namespace) -> dict:
    """Throughput of the first ``num_seeds`` seeds: looped and vmapped on one device, vmapped with the seeds
    sharded over the devices (as the CLI runs them); small-matmul rate; memory."""
    seeds, data_host = first_seeds(work, num_seeds)
    device = jax.devices()[0]
    inputs, train_data = jax.device_put((seeds, data_host), device)
    mesh = Mesh(np.asarray(parallel.seed_mesh().devices.flat[:sharded_devices(num_seeds)]), (parallel.SEED_AXIS,))
    sharded, replicated = parallel.shard_seeds(seeds, mesh), parallel.replicate(data_host, mesh)
    over_seeds = jax.jit(jax.vmap(work.run, in_axes=(0, 0, 0, None)))
    vmapped = over_seeds.lower(*inputs, train_data).compile()
    vmapped_sharded = parallel.seed_map(work.run, mesh, in_axes=(0, 0, 0, None))
    single = jax.jit(work.run)
    per_seed = [_seed(inputs, i) for i in range(num_seeds)]
    jax.block_until_ready((single(*per_seed[0], train_data), vmapped(*inputs, train_data),
                           vmapped_sharded(*sharded, replicated)))
    variants = {
        "loop": lambda: [single(*p, train_data) for p in per_seed],
        "vmap": lambda: vmapped(*inputs, train_data),
        "sharded": lambda: vmapped_sharded(*sharded, replicated),
    }
    runs = [{name: timed(fn) for name, fn in variants.items()}
            for _ in range(args.repeats)]  # interleaved, so all see the same background load
    seed_steps = num_seeds * work.steps
    batch, width = work.config.batch_size, work.config.widths[-1]
    return {
        "seeds": num_seeds,
        "devices": mesh.size,
        **{name: [seed_steps / run[name][0] for run in runs] for name in variants},
        **{f"{name}_vs_loop": [run["loop"][0] / run[name][0] for run in runs] for name in ("vmap", "sharded")},
        "cpu_us": {name: [1e6 * run[name][1] / seed_steps for run in runs] for name in variants},
        "small_matmul": matmul_rate((num_seeds, batch, width), args.repeats, iterations=64 * 32 // num_seeds),
        "bytes": program_bytes(vmapped),
    }


def sharded_devices(num_seeds: int) -> int:
    """The most devices of the CLI's seed mesh (one per core) that split ``num_seeds`` evenly."""
    return max(d for d in range(1, min(parallel.seed_mesh().size, num_seeds) + 1) if num_seeds % d == 0)


def print_table(rows: list[dict], peak: list[float], flops: float, hand_flops: int) -> None:
    """The results as markdown tables, figures as median [min, max] over repeats."""
    best, first = max(peak), rows[0]
    print(f"\nmatmul peak (jnp.dot n x n, best n per run): {spread(peak, '.1f')} GFLOP/s; % of peak is against the "
          f"best, {best:.1f}")
    print(f"FLOPs per seed-step: XLA {flops / 1e6:.2f} M, hand count of the matmuls {hand_flops / 1e6:.2f} M\n")
    print("| seeds | devices | loop seed-steps/s | vmapped, 1 device | vmapped, sharded | vmapped / loop "
          "| sharded / loop | CPU-µs per seed-step: loop, vmapped, sharded | sharded GFLOP/s | % of matmul peak |")
    print("|---" * 10 + "|")
    for row in rows:
        gflops = [r * flops / 1e9 for r in row["sharded"]]
        cpu = ", ".join(spread(row["cpu_us"][name]) for name in ("loop", "vmap", "sharded"))
        print(f"| {row['seeds']} | {row['devices']} | {spread(row['loop'])} | {spread(row['vmap'])} "
              f"| {spread(row['sharded'])} | {spread(row['vmap_vs_loop'], '.2f')} "
              f"| {spread(row['sharded_vs_loop'], '.2f')} | {cpu} | {spread(gflops, '.1f')} "
              f"| {spread([100 * g / best for g in gflops], '.0f')} |")
    print("\n| seeds | small-matmul GFLOP/s (step's largest shape, batched over seeds) | memory / seed "
          "| marginal memory / seed |")
    print("|---" * 4 + "|")
    for row in rows:
        marginal = "" if row is first else (
            f"{(row['bytes'] - first['bytes']) / (row['seeds'] - first['seeds']) / 2**20:.2f} MiB")
        per_seed = row["bytes"] / row["seeds"] / 2**20
        print(f"| {row['seeds']} | {spread(row['small_matmul'], '.1f')} | {per_seed:.2f} MiB | {marginal} |")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--epochs", type=int, default=2, help="epochs per timed training call")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--matmul-sizes", type=int, nargs="+", default=[512, 1024, 2048])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks that the script runs")
    args = parser.parse_args(argv)
    args.overrides = {}
    if args.smoke:
        args.seeds, args.epochs, args.repeats, args.matmul_sizes = [1, 2], 1, 2, [128]
        args.overrides = dict(dataset="gaussian", num_examples=256, num_test=64, input_dim=8, num_classes=3,
                              widths=(16, 16))
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    parallel.use_cpu_cores(math.lcm(*args.seeds))  # the CLI's CPU set-up for the largest sweep
    print(f"jax {jax.__version__} on {jax.device_count()} x {jax.devices()[0].device_kind}; {loadavg()}")
    work = workload(args, data.load(irp_config(**args.overrides)))
    peak = matmul_peak(args.matmul_sizes, args.repeats)
    rows = []
    for num_seeds in args.seeds:
        rows.append(measure(work, num_seeds, args))
        print(f"S={num_seeds} done; {loadavg()}", flush=True)
    peak += matmul_peak(args.matmul_sizes, args.repeats)  # before and after
    one_seed = jax.tree.map(lambda leaf: leaf[0], work.seeds.params)
    print_table(rows, peak, step_flops(work), matmul_flops(one_seed, work.config.batch_size))
    print(f"\n{loadavg()}")


if __name__ == "__main__":
    main()
