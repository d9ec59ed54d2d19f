"""Experiment ``toy_mutual_information``: No Free Prune's Figure 4, exact I(m; D | init) on the toy model.

With the initialization θ₀ fixed (``seed``), every method of :mod:`jaxprune.toy` is a deterministic function of
the dataset D, so I(m; D | θ₀) = H(m | θ₀) − H(m | D, θ₀) = H(m | θ₀), in bits, for every count k of pruned
parameters. Two ways to get it:

- sampled: ``num_datasets`` datasets of ``num_examples`` codes drawn i.i.d. uniformly (``data_seed``), all
  their masks in one vmapped program; H from the empirical mask distribution of the first N datasets for each N
  of ``sample_sizes``, plug-in and Miller–Madow (:func:`jaxprune.mi.entropy_bits`);
- exact (``exact``): every multiset of codes with its probability (:func:`jaxprune.toy.multisets`), all their
  masks in one vmapped program, H summed exactly (:func:`jaxprune.toy.exact_entropy_bits`); the sampled
  estimates' errors are reported against it.

``mi_bits`` in results.json is the exact value when computed, else Miller–Madow at the largest sample size.
"""
from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune import mi, plotting, toy
from jaxprune.config import check_choice, check_positive_int
from jaxprune.errors import ConfigError
from jaxprune.experiments import common

ESTIMATORS = ("plugin", "miller_madow")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def toy_of(config) -> toy.Toy:
    """The toy's sizes and training from the config (classification: two logits)."""
    return toy.Toy(input_dim=config.input_dim, width=config.widths[0],
                   num_outputs=2 if config.task == "classification" else 1, learning_rate=config.learning_rate,
                   steps=config.train_steps, temperature=config.grasp_temperature,
                   synflow_rounds=config.synflow_rounds)


def validate(config) -> None:
    """The toy's sizes, the sample sizes, and that the exact enumeration fits in ``max_exact_datasets``."""
    check_choice(config, "task", toy.TASKS)
    _check(len(config.widths) == 1, f"config.widths={tuple(config.widths)!r}: the toy has one hidden layer, "
                                    "e.g. (4,)")
    for key in ("train_steps", "num_examples", "num_datasets", "synflow_rounds", "max_exact_datasets"):
        check_positive_int(config, key)
    _check(config.grasp_temperature > 0, f"config.grasp_temperature={config.grasp_temperature!r}: must be > 0")
    sizes = config.sample_sizes
    _check(isinstance(sizes, (list, tuple)) and len(sizes) > 0
           and all(isinstance(s, int) and 2 <= s <= config.num_datasets for s in sizes),
           f"config.sample_sizes={sizes!r}: must be a non-empty tuple of integers in [2, num_datasets="
           f"{config.num_datasets}]")
    methods = config.methods
    _check(isinstance(methods, (list, tuple)) and len(methods) > 0 and set(methods) <= set(toy.METHODS),
           f"config.methods={methods!r}: must be a non-empty tuple of names from {', '.join(toy.METHODS)}")
    sizes = toy_of(config)
    _check(sizes.num_params <= 62, f"the toy has {sizes.num_params} parameters: at most 62 fit a mask id")
    count = toy.num_multisets(sizes.num_codes, config.num_examples)
    _check(not config.exact or count <= config.max_exact_datasets,
           f"config.exact=True: {config.num_examples} points from {sizes.num_codes} (point, label) codes make "
           f"{count:,} datasets up to order, more than config.max_exact_datasets={config.max_exact_datasets:,}; "
           "set --config.exact=False or a smaller toy")


def mask_ids(config, sizes: toy.Toy, theta0: jax.Array, codes: np.ndarray) -> dict[str, np.ndarray]:
    """Every method's mask id per dataset and count, {method: [datasets, P]}, in one vmapped program."""
    def one(c):
        masks = toy.all_masks(sizes, theta0, c)
        return {m: masks[m] for m in config.methods}

    masks = jax.jit(jax.vmap(one))(jnp.asarray(codes))
    return {m: toy.pattern_ids(np.asarray(masks[m])) for m in config.methods}


def sampled_bits(ids: dict[str, np.ndarray], sample_sizes) -> dict:
    """{N: {estimator: {method: [bits per count]}}} from the first N datasets."""
    def at(n):
        per_method = {m: [mi.entropy_bits(v[:n, k]) for k in range(v.shape[1])] for m, v in ids.items()}
        return {e: {m: [b[i] for b in bits] for m, bits in per_method.items()} for i, e in enumerate(ESTIMATORS)}

    return {int(n): at(n) for n in sample_sizes}


def run(config, workdir: str) -> dict:
    """Sampled and exact MI per method and count; results.json and ``mi_vs_pruned.png``."""
    log = common.Progress("toy_mutual_information")
    sizes = toy_of(config)
    theta0 = toy.init(sizes, jax.random.key(config.seed))
    log(f"toy: {config.input_dim} inputs, width {sizes.width}, {sizes.num_params} parameters, {config.task}; "
        f"{config.num_datasets} sampled datasets of {config.num_examples} points, methods {', '.join(config.methods)}")
    codes = np.sort(np.asarray(jax.random.randint(jax.random.key(config.data_seed),
                                                  (config.num_datasets, config.num_examples), 0, sizes.num_codes)), 1)
    ids, exact, timings = all_mask_ids(config, sizes, theta0, codes, log)
    sampled = sampled_bits(ids, config.sample_sizes)
    results = {"experiment": "toy_mutual_information", "task": config.task, "num_params": sizes.num_params,
               "pruned_counts": list(range(sizes.num_params)), "theta0": np.asarray(theta0).tolist(),
               "dense_train_loss": dense_train_loss(sizes, theta0, codes), "sampled": sampled, "timings": timings,
               "mi_bits": sampled[max(sampled)]["miller_madow"],
               "mi_source": f"miller_madow at {max(sampled)} samples"}
    if exact is not None:
        results |= {"num_exact_datasets": exact.pop("num_datasets"), "exact": exact, "mi_bits": exact,
                    "mi_source": "exact enumeration", "sampled_error": sampled_errors(sampled, exact)}
    for m, bits in results["mi_bits"].items():
        log(f"{m:>16}: bits at 0..{sizes.num_params - 1} pruned: {' '.join(f'{b:.2f}' for b in bits)}")
    write_figure(os.path.join(workdir, "mi_vs_pruned.png"), config, results)
    return results


def all_mask_ids(config, sizes: toy.Toy, theta0: jax.Array, codes: np.ndarray, log) -> tuple[dict, dict | None, dict]:
    """(mask ids of the sampled datasets {method: [N, P]}, the exact entropies {method: [P]} and the number of
    datasets up to order, or None without ``exact``, timings). With ``exact`` every multiset's masks are computed
    once and the sampled datasets' masks looked up among them (a mask is a function of the multiset)."""
    start = time.perf_counter()
    if not config.exact:
        ids = mask_ids(config, sizes, theta0, codes)
        log(f"masks of {config.num_datasets} datasets in {time.perf_counter() - start:.1f} s")
        return ids, None, {"sampled_masks_s": time.perf_counter() - start}
    rows, probabilities = toy.multisets(sizes.num_codes, config.num_examples)
    exact_ids = mask_ids(config, sizes, theta0, rows)
    seconds = time.perf_counter() - start
    log(f"exact: masks of all {len(rows):,} datasets up to order in {seconds:.1f} s (the sampled datasets' masks "
        "are looked up among them)")
    exact = {m: [toy.exact_entropy_bits(v[:, k], probabilities) for k in range(v.shape[1])]
             for m, v in exact_ids.items()}
    row_of = row_index(rows, codes, sizes.num_codes)
    return {m: v[row_of] for m, v in exact_ids.items()}, exact | {"num_datasets": len(rows)}, {"exact_masks_s": seconds}


def row_index(rows: np.ndarray, codes: np.ndarray, num_codes: int) -> np.ndarray:
    """For each sorted dataset of ``codes`` [N, n], its row in the sorted multisets ``rows`` [M, n]
    (rows compared as base-``num_codes`` numbers, which :func:`jaxprune.toy.multisets` lists in increasing order)."""
    weights = num_codes ** np.arange(rows.shape[1] - 1, -1, -1, dtype=np.int64)
    return np.searchsorted(rows.astype(np.int64) @ weights, codes.astype(np.int64) @ weights)


def dense_train_loss(sizes: toy.Toy, theta0: jax.Array, codes: np.ndarray) -> dict:
    """Mean and max over the sampled datasets of the dense net's training loss after training."""
    def one(c):
        data = toy.dataset(sizes, c)
        return toy.loss(sizes, toy.train(sizes, theta0, jnp.ones(sizes.num_params, bool), data), data)

    losses = np.asarray(jax.jit(jax.vmap(one))(jnp.asarray(codes[:1000])))
    return {"mean": float(losses.mean()), "max": float(losses.max()), "datasets": len(losses)}


def sampled_errors(sampled: dict, exact: dict) -> dict:
    """{N: {estimator: {method: max over counts of |estimate − exact|}}} in bits."""
    return {n: {e: {m: float(np.max(np.abs(np.subtract(v, exact[m])))) for m, v in per.items()}
                for e, per in by_estimator.items()} for n, by_estimator in sampled.items()}


def write_figure(path: str, config, results: dict) -> None:
    """Left: bits against parameters pruned, one curve per method in its fixed colour (:func:`plotting.styles`;
    exact solid when computed, Miller–Madow at the largest sample dashed). Right: the sampled estimates' largest
    error against the exact value vs N (plug-in solid, Miller–Madow dashed)."""
    fig, axes = plotting.figure(2 if "exact" in results else 1, width=5.0, height=3.8)
    counts, largest = results["pruned_counts"], max(results["sampled"])
    color = {m: style["color"] for m, style in plotting.styles(list(results["mi_bits"])).items()}
    for m, bits in results["mi_bits"].items():
        source = "exact" if "exact" in results else results["mi_source"]
        axes[0][0].plot(counts, bits, marker="o", markersize=3, color=color[m], label=f"{m} ({source})")
        if "exact" in results:
            axes[0][0].plot(counts, results["sampled"][largest]["miller_madow"][m], linestyle="--", marker="x",
                            markersize=3, color=color[m], label=f"{m} (Miller–Madow, {largest} samples)")
    axes[0][0].set(xlabel="parameters pruned", ylabel="I(m; D | init) = H(m | init)  [bits]",
                   title=f"Toy {config.task}: {results['num_params']} parameters")
    if "exact" in results:
        sizes = sorted(results["sampled_error"])
        for m in results["exact"]:
            for estimator, style in zip(ESTIMATORS, ("-", "--")):
                axes[0][1].plot(sizes, [results["sampled_error"][n][estimator][m] for n in sizes], style,
                                marker="o", markersize=3, color=color[m])
        axes[0][1].set(xscale="log", xlabel="sampled datasets N", ylabel="max |estimate − exact| [bits]",
                       title=plotting.wrap("Sampled vs exact (solid: plug-in, dashed: Miller–Madow)", 40))
    for ax in axes[0]:
        ax.grid(alpha=0.3)
    plotting.legend_outside(fig, axes[0][:1])
    plotting.save(fig, path)
