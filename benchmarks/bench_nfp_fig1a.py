"""No Free Prune Fig. 1a's unit of work for k seeds three ways: one vmapped and sharded JAX program, a per-seed JAX
loop, and a per-seed PyTorch loop (only when ``torch`` is importable; it is not a dependency).

Work per seed (``configs/nfp_fig1a.py`` sizes): draw the seed's own dataset (30 Gaussian points in d = 30, random
±1 labels), initialize the MLP 30-200-200-2 (PyTorch's default init), prune it to 95.6% sparsity with a random
global mask, train ``--epochs`` full-batch Adam steps (lr 1e-2) with the mask held, and count the points whose
cross-entropy is ≤ log(2)/10. A fixed number of epochs (no stop rule) makes the three do identical work.

* JAX vmapped + sharded: :func:`jaxprune.parallel.seed_map` of the one-seed function over the k seeds (blocks of
  :func:`jaxprune.parallel.seed_block` seeds, one CPU device per core, as the CLI runs).
* JAX per-seed loop: ``jax.jit`` of the same one-seed function, compiled once, called k times.
* PyTorch: eager, CPU, ``torch.set_num_threads(1)``, the same maths per seed (its own RNG, so other numbers).

Networks/s is k / the median wall time (after a compile call); memory per seed is the vmapped program's
``memory_analysis`` (arguments + outputs + temporaries) over its seeds. Run: ``python benchmarks/bench_nfp_fig1a.py``
(k = 16 and 64, 200 epochs, 3 repeats); ``--smoke`` is a seconds-long check.
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import time

import jax
import jax.numpy as jnp

from bench_seeds import loadavg, spread
from configs import nfp_fig1a
from jaxprune import data, masks, parallel, train
from jaxprune.experiments import common, memorization

SPARSITY = 0.956


def one_seed_fn(config, setup: common.Setup, epochs: int):
    """key -> memorized fraction of one seed: its data, init, random mask, ``epochs`` full-batch Adam epochs."""
    tx = train.optimizer_from_config(config, 1)

    def run(key):
        data_key, init_key, mask_key, order_key = jax.random.split(key, 4)
        own = data.draw(data_key, config)
        params, batch_stats = train.init_variables(setup.model, init_key, own.x_train[0])
        mask = masks.from_scores(jax.tree.map(lambda p: jax.random.normal(mask_key, p.shape), params), params,
                                 SPARSITY)
        state = train.init_state(masks.apply(params, mask), batch_stats, tx)
        fit = train.Data(own.x_train, own.y_train)
        state, _, _ = train.train(state, mask, fit, order_key, model=setup.model, tx=tx, epochs=epochs,
                                  batch_size=config.batch_size)
        logits = train.apply_model(setup.model, state.params, state.batch_stats, own.x_train)
        return jnp.mean(memorization.memorized_points(logits, own.y_train, config.memorized_loss_max))

    return run


def timed(fn, repeats: int) -> list[float]:
    fn()  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def torch_seconds(torch, config, k: int, epochs: int, repeats: int) -> list[float]:
    """Wall time of the per-seed PyTorch loop over k seeds (the same work, eager, one thread)."""
    torch.set_num_threads(1)

    def one(seed):
        torch.manual_seed(seed)
        x = torch.randn(config.num_examples, config.input_dim) / math.sqrt(config.input_dim)
        y = torch.randint(0, 2, (config.num_examples,))
        sizes = [config.input_dim, *config.widths, 2]
        layers = [torch.nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])]  # PyTorch's default init
        model = torch.nn.Sequential(*[m for layer in layers for m in (layer, torch.nn.ReLU())][:-1])
        kernels = [layer.weight for layer in layers]
        scores = torch.cat([torch.randn(w.numel()) for w in kernels])
        keep = scores >= scores.kthvalue(int(round(SPARSITY * scores.numel()))).values
        mask = [m.view_as(w) for m, w in zip(torch.split(keep, [w.numel() for w in kernels]), kernels)]
        with torch.no_grad():
            torch._foreach_mul_(kernels, mask)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
        for _ in range(epochs):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            torch._foreach_mul_([w.grad for w in kernels], mask)
            optimizer.step()
        with torch.no_grad():
            losses = torch.nn.functional.cross_entropy(model(x), y, reduction="none")
        return float((losses <= config.memorized_loss_max).float().mean())

    return timed(lambda: [one(s) for s in range(k)], repeats)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seeds, args.epochs, args.repeats = [4], 3, 1
    parallel.use_cpu_cores(max(args.seeds))
    print(f"start: {loadavg()}")
    config = nfp_fig1a.get_config()
    torch = importlib.import_module("torch") if importlib.util.find_spec("torch") else None
    rows = []
    for k in args.seeds:
        config.num_seeds = k
        setup = common.setup(config)
        one = one_seed_fn(config, setup, args.epochs)
        keys = common.seed_keys(0, k)
        vmapped = parallel.seed_map(one, setup.mesh)
        looped = jax.jit(one)
        t_vmap = timed(lambda: jax.block_until_ready(vmapped(keys)), args.repeats)
        t_loop = timed(lambda: [jax.block_until_ready(looped(key)) for key in keys], args.repeats)
        t_torch = torch_seconds(torch, config, k, args.epochs, args.repeats) if torch else None
        memory = jax.jit(jax.vmap(one)).lower(keys).compile().memory_analysis()
        per_seed = (memory.argument_size_in_bytes + memory.output_size_in_bytes + memory.temp_size_in_bytes) / k
        rows.append((k, setup.mesh.size, t_vmap, t_loop, t_torch, per_seed))
    print(f"end: {loadavg()}; torch {'importable' if torch else 'not importable: not measured'}\n")
    print("| seeds | devices | vmapped+sharded nets/s | JAX loop nets/s | PyTorch loop nets/s | vmapped / JAX loop "
          "| vmapped / PyTorch | memory per seed (vmapped, KiB) |")
    print("|---|---|---|---|---|---|---|---|")
    for k, devices, t_vmap, t_loop, t_torch, per_seed in rows:
        rate = lambda ts: [k / t for t in ts]  # noqa: E731
        ratio = lambda a, b: [x / y for x, y in zip(b, a)]  # noqa: E731  (time of b / time of a)
        torch_cells = (spread(rate(t_torch), ".1f"), spread(ratio(t_vmap, t_torch), ".1f")) if t_torch else (
            "not measured", "not measured")
        print(f"| {k} | {devices} | {spread(rate(t_vmap), '.1f')} | {spread(rate(t_loop), '.1f')} | "
              f"{torch_cells[0]} | {spread(ratio(t_vmap, t_loop), '.2f')} | {torch_cells[1]} | {per_seed / 1024:.0f} |")


if __name__ == "__main__":
    main()
