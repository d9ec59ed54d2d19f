"""The IRP job for S seeds three ways, doing identical work: one vmapped JAX program for all seeds, a per-seed
JAX loop, and a plain PyTorch per-seed loop (only when ``torch`` is importable; it is not a dependency).

Work: ``configs/irp.py`` (MLP 40-200-200-10 on MNIST-1D, 4000 train / 1000 test, batch 64, Adam lr 1e-3) for
``--rounds`` rounds of ``--epochs`` epochs: rewind survivors to their initial values with a fresh Adam, train with
the mask held fixed, evaluate on the test set, prune ``prune_fraction`` of the survivors by global magnitude,
add the mask to the survival counts.

* JAX vmapped: :func:`jaxprune.experiments.irp.run_rounds` for S seeds. JAX per-seed loop: ``run_rounds`` with one
  seed, called once per seed. Compile-inclusive: the wall time of the calls (every call compiles its round
  program again). Steady state: rounds x the median wall time of rounds ≥ 1 (round 0 compiles), timed between the
  per-round ``log`` callbacks, which follow a host copy of each round's metrics.
* PyTorch: eager, on CPU tensors, ``torch.set_num_threads`` for each of ``--torch-threads``; each epoch gathers one
  permuted copy of the data and slices it into batches; fused Adam; masked kernel gradients (a pruned weight
  starts at 0 with zero gradient, so Adam's moments and update stay exactly 0); He-normal init, zero biases;
  pruning keeps the top round(d·n) |θ| among the surviving kernel entries of all layers, as jaxprune does.

Times are median [min, max] over ``--repeats`` runs. Run: ``python benchmarks/bench_irp_torch.py``
(about 8 minutes on 2 busy cores with --torch-threads 1); ``--smoke`` is a seconds-long check.
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import os
import statistics
import time
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from bench_seeds import irp_config, loadavg, matmul_peak, spread, step_flops, workload
from jaxprune import data, irp, parallel
from jaxprune.experiments import common
from jaxprune.experiments import irp as irp_experiment


def jax_irp_seconds(config, dataset, densities, mesh=None) -> tuple[float, float, float]:
    """(compile-inclusive seconds, steady-state seconds, mean final test accuracy) of one ``run_rounds`` call,
    seeds sharded over ``mesh`` (default: every device, as the CLI runs)."""
    marks = []
    start = time.perf_counter()
    _, history, _ = irp_experiment.run_rounds(config, common.setup(config, dataset, mesh), densities,
                                              log=lambda _: marks.append(time.perf_counter()))
    total = time.perf_counter() - start
    steady = len(densities) * statistics.median(np.diff(marks)) if len(marks) > 1 else total
    return total, steady, float(np.mean(history[-1]["test_accuracy"]))


def jax_loop_seconds(config, dataset, densities) -> tuple[float, float, float]:
    """The same figures for ``run_rounds`` called once per seed with one seed on one device (times summed,
    accuracy averaged)."""
    runs, one_device = [], Mesh(np.asarray(jax.devices()[:1]), (parallel.SEED_AXIS,))
    for s in range(config.num_seeds):
        one_seed = config.copy_and_resolve_references()
        one_seed.update(num_seeds=1, seed=config.seed + s)
        runs.append(jax_irp_seconds(one_seed, dataset, densities, one_device))
    return sum(r[0] for r in runs), sum(r[1] for r in runs), float(np.mean([r[2] for r in runs]))


def torch_mlp(torch, in_features: int, widths: Sequence[int], num_classes: int):
    """nn.Sequential of ReLU Linear layers with He-normal (fan_in) weights and zero biases, as jaxprune's MLP."""
    sizes = [in_features, *widths, num_classes]
    layers = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        linear = torch.nn.Linear(fan_in, fan_out)
        torch.nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
        torch.nn.init.zeros_(linear.bias)
        layers += [linear, torch.nn.ReLU()]
    return torch.nn.Sequential(*layers[:-1])


def torch_magnitude_prune(torch, kernels, mask, density: float):
    """Keep the round(density·n) largest |θ| among the surviving entries of all kernels (global scope)."""
    scores = torch.cat([torch.where(m, k.detach().abs(), -math.inf).flatten() for k, m in zip(kernels, mask)])
    keep = torch.zeros(scores.numel(), dtype=torch.bool)
    keep[scores.topk(math.floor(density * scores.numel() + 0.5)).indices] = True
    return [part.view(k.shape) for part, k in zip(keep.split([k.numel() for k in kernels]), kernels)]


def torch_irp_seed(torch, config, dataset, densities, seed: int) -> float:
    """One seed's IRP in PyTorch; returns the final round's test accuracy."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    x, y = torch.from_numpy(dataset.x_train), torch.from_numpy(dataset.y_train).long()
    x_test, y_test = torch.from_numpy(dataset.x_test), torch.from_numpy(dataset.y_test).long()
    model = torch_mlp(torch, x.shape[1], config.widths, dataset.num_classes)
    params = list(model.parameters())
    initial = [p.detach().clone() for p in params]
    kernels = [p for p in params if p.ndim >= 2]
    mask = [torch.ones_like(k, dtype=torch.bool) for k in kernels]
    survival = [torch.zeros_like(k, dtype=torch.int32) for k in kernels]
    steps, batch = len(y) // config.batch_size, config.batch_size
    for density in densities:
        with torch.no_grad():
            torch._foreach_copy_(params, initial)
            torch._foreach_mul_(kernels, mask)
        float_mask = [m.float() for m in mask]
        optimizer = torch.optim.Adam(params, lr=config.learning_rate, fused=True)
        for _ in range(config.epochs):
            order = torch.randperm(len(y), generator=generator)[: steps * batch]
            loss_sum, correct = torch.zeros(()), torch.zeros((), dtype=torch.long)
            for xb, yb in zip(x[order].view(steps, batch, -1), y[order].view(steps, batch)):
                logits = model(xb)
                loss = torch.nn.functional.cross_entropy(logits, yb)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch._foreach_mul_([k.grad for k in kernels], float_mask)
                optimizer.step()
                loss_sum += loss.detach()
                correct += (logits.detach().argmax(1) == yb).sum()
        with torch.inference_mode():
            test_accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
        mask = torch_magnitude_prune(torch, kernels, mask, density)
        survival = [s + m for s, m in zip(survival, mask)]
    return test_accuracy


def torch_loop_seconds(torch, threads: int, config, dataset, densities) -> tuple[float, float]:
    """(seconds, mean final test accuracy) of the PyTorch IRP for every seed, one after another."""
    torch.set_num_threads(threads)
    start = time.perf_counter()
    accuracy = [torch_irp_seed(torch, config, dataset, densities, config.seed + s) for s in range(config.num_seeds)]
    return time.perf_counter() - start, float(np.mean(accuracy))


def import_torch():
    """The ``torch`` module, or None when it is not installed."""
    if importlib.util.find_spec("torch") is None:
        return None
    import torch
    return torch


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5, help="epochs per round")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--matmul-sizes", type=int, nargs="+", default=[512, 1024, 2048])
    parser.add_argument("--torch-threads", type=int, nargs="+", default=None,
                        help="PyTorch thread counts to time (default: the core count, then 1)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks that the script runs")
    args = parser.parse_args(argv)
    args.overrides = {}
    if args.smoke:
        args.seeds, args.rounds, args.epochs, args.repeats, args.matmul_sizes = 2, 2, 1, 1, [128]
        args.overrides = dict(dataset="gaussian", num_examples=256, num_test=64, input_dim=8, num_classes=3,
                              widths=(16, 16))
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    parallel.use_cpu_cores(args.seeds)  # the CLI's CPU set-up: one device per core
    config = irp_config(num_seeds=args.seeds, rounds=args.rounds, epochs=args.epochs, **args.overrides)
    dataset = data.load(config)
    densities = irp.schedule(config.prune_fraction, config.rounds)
    torch = import_torch()
    threads = (args.torch_threads or sorted({os.cpu_count(), 1}, reverse=True)) if torch else []
    steps = config.num_seeds * config.rounds * config.epochs * (len(dataset.y_train) // config.batch_size)
    print(f"IRP: {config.num_seeds} seeds x {config.rounds} rounds x {config.epochs} epochs "
          f"= {steps} seed-steps of batch {config.batch_size}; JAX on {jax.device_count()} CPU devices; {loadavg()}")
    print("torch: " + (f"{torch.__version__}, threads {threads}" if torch else "not importable, PyTorch skipped"))
    rows = {"JAX vmapped (run_rounds, all seeds)": [], "JAX per-seed loop (run_rounds, 1 seed)": []}
    rows |= {f"PyTorch per-seed loop, {t} thread(s)": [] for t in threads}
    for _ in range(args.repeats):
        rows["JAX vmapped (run_rounds, all seeds)"].append(jax_irp_seconds(config, dataset, densities))
        rows["JAX per-seed loop (run_rounds, 1 seed)"].append(jax_loop_seconds(config, dataset, densities))
        for t in threads:
            seconds, accuracy = torch_loop_seconds(torch, t, config, dataset, densities)
            rows[f"PyTorch per-seed loop, {t} thread(s)"].append((seconds, seconds, accuracy))
        print(f"repeat done; {loadavg()}", flush=True)
    print_table(rows, steps)
    print_bound(rows, steps, args, dataset)
    print(f"\n{loadavg()}")


def print_bound(rows: dict, steps: int, args: argparse.Namespace, dataset) -> None:
    """The roofline: seed-steps/s if every FLOP of the step ran at the matmul peak, and what that allows over
    each implementation's measured steady-state rate."""
    flops = step_flops(workload(argparse.Namespace(seeds=[args.seeds], epochs=1, overrides=args.overrides), dataset))
    peak = max(matmul_peak(args.matmul_sizes, 3))
    bound = peak * 1e9 / flops
    print(f"\nroofline: matmul peak {peak:.1f} GFLOP/s / {flops / 1e6:.2f} MFLOP per seed-step (XLA) = {bound:.0f} "
          "seed-steps/s at most; the most any implementation could be faster than each row (steady):")
    for name, runs in rows.items():
        print(f"  {name}: {bound / statistics.median(steps / r[1] for r in runs):.1f}x")


def print_table(rows: dict[str, list[tuple[float, float, float]]], steps: int) -> None:
    """Seconds and ratios to the vmapped JAX run, as a markdown table: median [min, max] over repeats."""
    base = rows["JAX vmapped (run_rounds, all seeds)"]
    print("\n| implementation | compile-incl. s | steady-state s | seed-steps/s (steady) "
          "| x vmapped JAX (compile-incl.) | x vmapped JAX (steady) | final test acc |")
    print("|---|---|---|---|---|---|---|")
    for name, runs in rows.items():
        total, steady, accuracy = zip(*runs)
        ratio_total = [t / b[0] for t, b in zip(total, base)]
        ratio_steady = [s / b[1] for s, b in zip(steady, base)]
        print(f"| {name} | {spread(total, '.1f')} | {spread(steady, '.1f')} | {spread([steps / s for s in steady])} "
              f"| {spread(ratio_total, '.2f')} | {spread(ratio_steady, '.2f')} | {statistics.mean(accuracy):.3f} |")


if __name__ == "__main__":
    main()
