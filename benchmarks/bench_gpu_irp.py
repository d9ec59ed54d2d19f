"""One short IRP round of VGG-16 and ResNet-18 on CIFAR-shaped data generated locally (no download), for S seeds
at once on whatever device JAX has: seed-steps/s, FLOP/s against the matmul peak measured in the same run, and
memory per seed. Meant for a GPU (``benchmarks/gpu_check.sh``); needs jax, flax, optax and numpy only (no
ml-collections, TFDS or mnist1d).

Per model and seed count: one IRP round (rewind, ``--epochs`` epochs of momentum SGD on ``--examples`` random
32x32x3 images with random labels, evaluation, global magnitude pruning of 20%) through
:func:`jaxprune.parallel.seed_map`, the pieces the CLI runs; timed once to compile and once more in steady state.
FLOPs per seed-step from XLA's ``cost_analysis`` of one training step; the peak from chained n x n matmuls in
the models' dtype (float32, TF32 where the device allows it, as the models run); memory per seed from
``compile().memory_analysis()`` of the training program (arguments + outputs + temporaries − aliased, / S).

    python benchmarks/bench_gpu_irp.py                    # vgg16, resnet18; S = 1, 8; 1 epoch of 2048 images
    python benchmarks/bench_gpu_irp.py --smoke            # an MLP on 8x8 images: seconds on a CPU
"""
from __future__ import annotations

import argparse
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune import irp, models, parallel, train


def matmul_peak(n: int, repeats: int = 3, chain: int = 16) -> float:
    """Best FLOP/s over ``repeats`` timed chains of ``chain`` n x n float32 matmuls."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32) / np.sqrt(n)

    @jax.jit
    def run(x):
        return jax.lax.fori_loop(0, chain, lambda _, y: y @ a, x)

    run(a).block_until_ready()
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        run(a).block_until_ready()
        best = max(best, 2 * n**3 * chain / (time.perf_counter() - start))
    return best


def program_bytes(compiled) -> int:
    m = compiled.memory_analysis()
    return m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes


def round_programs(model, tx, steps: int, spe: int, batch_size: int, mesh):
    """(init, begin, train, end) of one IRP round of ``steps`` steps (``spe`` per epoch) for every seed
    (:func:`jaxprune.parallel.seed_map`, as :class:`jaxprune.experiments.irp.RoundPrograms` builds them)."""
    return (parallel.seed_map(irp.init, mesh, one_device=True),
            parallel.seed_map(functools.partial(irp.round_begin, tx=tx, num_steps=steps), mesh, one_device=True),
            parallel.seed_map(functools.partial(irp.round_train, model=model, tx=tx, num_steps=steps,
                                                batch_size=batch_size), mesh, in_axes=(0, 0, None, None)),
            parallel.seed_map(functools.partial(irp.round_end, model=model, steps_per_epoch=spe), mesh,
                              in_axes=(0, 0, None, None), one_device=True))


def measure(name: str, num_seeds: int, args, peak: float) -> dict:
    """Compile-inclusive and steady seconds of one IRP round, seed-steps/s, % of peak, memory per seed."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.examples, args.image_size, args.image_size, 3)).astype(np.float32)
    y = rng.integers(0, 10, args.examples).astype(np.int32)
    mesh = parallel.seed_mesh()
    data = parallel.replicate(train.Data(x, y), mesh)
    test = parallel.replicate(train.Data(x[:256], y[:256]), mesh)
    model = models.create(name, 10)
    spe = train.steps_per_epoch(args.examples, args.batch_size)
    steps = spe * args.epochs
    tx = train.make_optimizer("sgd", 0.01, total_steps=steps, momentum=0.9)
    keys = jax.random.split(jax.random.key(0), num_seeds)
    params, batch_stats = parallel.seed_map(lambda k, x0: train.init_variables(model, k, x0), mesh,
                                            in_axes=(0, None), one_device=True)(keys, x[0])
    init, begin, train_round, end = round_programs(model, tx, steps, spe, args.batch_size, mesh)

    def one_round():
        state = init(params, batch_stats, keys)
        progress = train_round(state, begin(state), data, jnp.int32(0))
        return jax.block_until_ready(end(state, progress, test, jnp.float32(0.8)))

    times = []
    for _ in range(2):  # the first call compiles
        start = time.perf_counter()
        one_round()
        times.append(time.perf_counter() - start)
    one = jax.tree.map(lambda a: a[0], (params, batch_stats))
    state = train.init_state(*one, tx)
    step = jax.jit(functools.partial(train.train_step, model=model, tx=tx))
    flops = step.lower(state, jax.tree.map(lambda p: jnp.ones(p.shape, bool), one[0]), x[:args.batch_size],
                       y[:args.batch_size]).compile().cost_analysis()["flops"]
    local = num_seeds // mesh.size  # seeds per device
    state = jax.device_get(init(params, batch_stats, keys))
    first = jax.tree.map(lambda a: a[:local], (state, jax.device_get(begin(state))))
    train_bytes = program_bytes(train_round.program.lower(*first, train.Data(x, y), jnp.int32(0)).compile())
    rate = num_seeds * steps / times[1]
    return {"model": name, "seeds": num_seeds, "compile_s": times[0] - times[1], "round_s": times[1],
            "seed_steps_per_s": rate, "peak_pct": 100 * rate * flops / peak,
            "mib_per_seed": train_bytes / local / 2**20}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["vgg16", "resnet18"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--examples", type=int, default=2048)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--matmul-size", type=int, default=8192)
    parser.add_argument("--smoke", action="store_true", help="an MLP, tiny sizes (a seconds-long check on a CPU)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.models, args.seeds, args.examples, args.batch_size = ["mlp"], [2], 32, 8
        args.image_size, args.matmul_size = 8, 256
    peak = matmul_peak(args.matmul_size)
    device = jax.devices()[0]
    print(f"device: {device.platform} {device.device_kind} x {parallel.seed_mesh().size}; float32 matmul peak "
          f"(n = {args.matmul_size}) {peak / 1e12:.2f} TFLOP/s")
    print("| model | seeds | compile s | round s (steady) | seed-steps/s | % of matmul peak | MiB per seed |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models:
        for num_seeds in args.seeds:
            r = measure(name, num_seeds, args, peak)
            print(f"| {r['model']} | {r['seeds']} | {r['compile_s']:.1f} | {r['round_s']:.2f} | "
                  f"{r['seed_steps_per_s']:.1f} | {r['peak_pct']:.1f} | {r['mib_per_seed']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
