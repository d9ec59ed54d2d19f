"""Which convergence rule measures memorization capacity: every candidate rule read off the same training runs.

Workload: ``configs/memorization.py`` (MLP 200-200 on Gaussian data with random labels, Adam, batch 64) with masks
of ``--methods`` at ``--sparsities`` and the dense net, ``--seeds`` seeds, every network trained ``--epochs`` epochs
with no rule (:func:`jaxprune.experiments.memorization.train_all`, ``rule=None``), recording L_e, A_e (training-set
loss and accuracy, inference mode) after every epoch. Each candidate :class:`StopRule` is then applied to those
histories (:func:`should_stop`, epoch by epoch, as the compiled loop does): where it would have stopped, the
memorized fraction there, and its deficit against the accuracy after all ``--epochs`` epochs (the reference for
capacity; a rule that never fires counts as capped, at the reference itself). A rule measures capacity if its
deficit is small at few capped nets; the paper's literal rule (window 1, patience 3, no minimum) is the first row.

Run: ``python benchmarks/bench_stop_rules.py`` (2 seeds, 400 epochs, lr 1e-2: ~2 min on 2 busy cores);
``--learning_rate=1e-3 --epochs=1000`` for the paper's rate; ``--smoke`` is a seconds-long check.
"""
from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from configs import memorization as memorization_config
from jaxprune import masks
from jaxprune.experiments import common, masking
from jaxprune.experiments import memorization as mem

CANDIDATES = {  # name: StopRule(loss_tol, loss_window, accuracy_patience, accuracy_tol, min_epochs, reading)
    "paper literal: plateau w=1, p=3": mem.StopRule(0.01, 1, 3, 0.0, 0, "plateau"),
    "plateau w=10, p=3, min 20": mem.StopRule(0.01, 10, 3, 0.0, 20, "plateau"),
    "plateau w=20, p=10, min 30 (default)": mem.StopRule(0.01, 20, 10, 0.0, 30, "plateau"),
    "plateau w=50, p=10, min 50": mem.StopRule(0.01, 50, 10, 0.0, 50, "plateau"),
    "interpolation, p=3, min 20": mem.StopRule(0.01, 1, 3, 0.0, 20, "interpolation"),
    "interpolation, p=10, min 30": mem.StopRule(0.01, 1, 10, 0.0, 30, "interpolation"),
}


def histories(args) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(network names, loss [nets, epochs], accuracy [nets, epochs]) of rule-free training."""
    config = memorization_config.get_config()
    config.update(num_seeds=args.seeds, learning_rate=args.learning_rate, num_examples=args.num_examples)
    if args.smoke:
        config.update(num_examples=64, input_dim=8, num_classes=4, widths=(16,), batch_size=16, synflow_rounds=2)
    setup = common.setup(config, mem.random_label_dataset(config))
    seeds = common.init_seeds(setup)
    grid, names = [jax.vmap(masks.ones)(seeds.params)], ["dense"]
    for method in args.methods:
        for s, stacked in masking.method_masks(method, config, setup, seeds, args.sparsities).items():
            grid.append(stacked)
            names.append(f"{method} {s}")
    out = mem.train_all(config, setup, seeds, grid, max_epochs=args.epochs, rule=None)
    names = [f"{n} seed {i}" for n in names for i in range(args.seeds)]
    return names, out["history"]["loss"].reshape(len(names), -1), out["history"]["accuracy"].reshape(len(names), -1)


def stopping_epoch(rule: mem.StopRule, loss: np.ndarray, accuracy: np.ndarray) -> int | None:
    """The first epoch e after which ``rule`` fires on these histories, else None."""
    loss, accuracy = jnp.asarray(loss), jnp.asarray(accuracy)
    check = jax.jit(lambda e: mem.should_stop(rule, loss, accuracy, e))
    return next((e for e in range(1, loss.shape[0] + 1) if bool(check(e))), None)


def table(names: list[str], loss: np.ndarray, accuracy: np.ndarray) -> list[str]:
    """Markdown rows: per rule, capped nets, mean epochs, mean and max deficit against the last epoch."""
    epochs = loss.shape[1]
    rows = [f"| rule | capped (of {len(names)}) | mean epochs | mean deficit | max deficit (net, its stop) |",
            "|---|---|---|---|---|"]
    for name, rule in CANDIDATES.items():
        stops = np.array([stopping_epoch(rule, lo, ac) or epochs for lo, ac in zip(loss, accuracy)])
        deficit = accuracy[:, -1] - accuracy[np.arange(len(names)), stops - 1]
        worst = int(np.argmax(deficit))
        rows.append(f"| {name} | {int(np.sum(stops == epochs))} | {stops.mean():.1f} | {deficit.mean():.3f} | "
                    f"{deficit[worst]:.3f} ({names[worst]}, epoch {stops[worst]}) |")
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=400)
    parser.add_argument("--learning_rate", type=float, default=1e-2)
    parser.add_argument("--num_examples", type=int, default=500)
    parser.add_argument("--methods", nargs="+", default=["random", "synflow", "snip"])
    parser.add_argument("--sparsities", nargs="+", type=float, default=[0.9, 0.95, 0.98])
    parser.add_argument("--smoke", action="store_true", help="tiny data and net, a few epochs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.epochs, args.methods, args.sparsities = 6, ["random"], [0.5]
    names, loss, accuracy = histories(args)
    print(f"accuracy after {args.epochs} epochs: " + ", ".join(f"{n} {a:.3f}" for n, a in zip(names, accuracy[:, -1])))
    print("\n" + "\n".join(table(names, loss, accuracy)) + "\n")


if __name__ == "__main__":
    main()
