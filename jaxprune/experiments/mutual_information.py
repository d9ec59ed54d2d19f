"""Experiment ``mutual_information``: I(m; D) between pruning masks and the data, and No Free Prune's p_eff.

Design (what is estimated, and why it is sound). No Free Prune's p_eff = E||m||_0 + I(m; D) concerns the mask
m of a FIXED initialization W, so the target is I(M; D | W) = E_W I(M; D | W = w). For each init seed s:

* dataset draws D_1..D_K share the training inputs; draw k redraws a ``draw_noise`` fraction of the training
  labels uniformly (:func:`jaxprune.data.corrupt_labels`, its own key), so with ``draw_noise = 1`` the whole
  dataset randomness is the label noise;
* each (W_s, D_k) gets R masks from the method's own randomness ξ (data order for IMP and training,
  scoring-batch choice for SNIP/GraSP, scores for random; magnitude and SynFlow have none, so their R masks
  coincide), ξ independent for every (k, r, s);
* ``mi.estimate`` gets the K·R masks of seed s with label k: the pairs (M, k) are i.i.d. from the joint law,
  and it estimates I(M; k | W = w_s, D_1..D_K). As M depends on (k, D_1..D_K) only through D_k,
  E_{D_1..D_K} I(M; k | W, D_1..D_K) <= I(M; D | W): a lower bound on the paper's quantity, capped at log2 K;
* per-seed estimates are averaged into I(M; D | W) (:func:`jaxprune.mi.conditional`), each at the Bonferroni
  level so the averaged interval has the stated confidence. Pooling seeds under one label would measure
  I(M; D, W) - I(M; W) only with the conditioning done right; averaging does it right by construction.

A data-independent method (random, magnitude, SynFlow) has M ⊥ D given W: its true MI is 0.

Masks M[k, r, s, stage] come from one jitted call per method, vmapped over draws × repeats × seeds
(:func:`ensemble`). Stages: the one PaI mask; IMP's mask after each round (the last is at ``sparsity``);
``magnitude_after``'s mask after t = 0..epochs epochs of dense training (prune after t epochs: the
"information gained during training" curve; t = 0 is magnitude at init).

Noise-bit design, the headline (``noise_bits`` > 0), in the memorization setting (configs/memorization.py's
data, model, optimizer and convergence rule): inputs and W fixed, the labels y of the memorization dataset; each
of the first ``noise_bits`` examples j has an alternative label a_j ≠ y_j, and mask i of ``noise_masks`` per
seed is computed on labels where example j carries a_j iff its fair bit z_ij = 1 (:func:`noise_draws`), with
its own ξ. Then Σ_j I(M; z_j) <= I(M; Z | W) (:func:`jaxprune.mi.noise_bits_bound`: cross-fitted decoders of
each bit from the mask, a permutation null), in bits, up to ``noise_bits`` — not capped at log2 K. Every stage
is bounded (IMP rounds, epochs before magnitude pruning: information gained during training). Beside it, the
memorization capacity of the same methods at ``sparsity`` (:func:`capacity`: the memorization experiment itself).
Magnitude and SynFlow masks are functions of W alone (:data:`DETERMINISTIC`): computed once per seed, bound 0.

Units: ``mi.MIResult`` is in bits. p_eff is :func:`jaxprune.mi.p_eff`, the one definition every experiment
uses: E||m||_0 counts every parameter the mask keeps (kept prunable weights plus the parameters never pruned,
``expected_nonzero``; ``expected_kept`` is the kept prunable weights alone), I in nats (bits · ln 2).

The noise-bit design's p_eff is a PROXY (``p_eff_is_proxy``): the bound covers I(M; Z | W), the information
the mask carries about the label-noise bits of this design, not I(m; D) about the paper's dataset draw; it is
reported in its place because the dataset-draw estimate saturates at log2 K. The permutation null is
``num_permutations`` label shuffles (default 1: the ``null_*`` columns are then one shuffle's value, not a
distribution's maximum; ``num_permutations`` >= 20 gives a null distribution at 20× the cost of the null fits).
"""
from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune import irp, masks, metrics, mi, pai, parallel, plotting, train
from jaxprune.config import check_choice, check_fraction, check_methods, check_positive_int, validate_pruning
from jaxprune.data import corrupt_labels
from jaxprune.errors import ConfigError
from jaxprune.experiments import common, masking, memorization
from jaxprune.experiments.irp import check_rewind_step

DATA_INDEPENDENT = ("random", "magnitude", "synflow")
DETERMINISTIC = ("magnitude", "synflow")  # the mask is a function of W alone: the same for every draw and key


def validate(config) -> None:
    """Keys of this experiment (see configs/mutual_information.py)."""
    check_methods(config, masking.methods())
    check_methods(config, masking.methods(), key="noise_methods")
    check_fraction(config, "sparsity")
    if config.sparsity_target != "nominal":
        raise ConfigError("config.sparsity_target: the MI experiment's masks are at nominal sparsity; use 'nominal'")
    if config.sparsity == 0:
        raise ConfigError("config.sparsity=0: must be in (0, 1), the fraction of prunable weights removed")
    check_positive_int(config, "num_draws", minimum=2)
    check_positive_int(config, "repeats")
    check_positive_int(config, "num_folds", minimum=2)
    if config.num_draws * config.repeats < 2 * config.num_folds:
        raise ConfigError(f"config.num_draws * config.repeats = {config.num_draws * config.repeats}: must be >= "
                          f"2 * config.num_folds = {2 * config.num_folds} masks per seed")
    if not (isinstance(config.draw_noise, (int, float)) and 0 < config.draw_noise <= 1):
        raise ConfigError(f"config.draw_noise={config.draw_noise!r}: must be in (0, 1]")
    check_choice(config, "estimator", mi.METHODS)
    check_positive_int(config, "num_permutations")
    check_positive_int(config, "noise_bits", minimum=0)
    check_positive_int(config, "noise_masks", minimum=2 * config.num_folds)
    check_positive_int(config, "noise_curve_every")
    if not 0 < config.confidence < 1:
        raise ConfigError(f"config.confidence={config.confidence!r}: must be in (0, 1)")
    validate_pruning(config)
    if config.capacity:
        check_positive_int(config, "capacity_seeds")
        memorization.validate(memorization_config(config))


def memorization_config(config):
    """The memorization experiment's config for the capacity beside the MI: ``config`` (whose data, model,
    optimizer and convergence keys are the memorization config's) at the one sparsity, on ``capacity_methods``."""
    mem = config.copy_and_resolve_references()
    with mem.unlocked():
        mem.experiment, mem.methods, mem.sparsities = "memorization", tuple(config.capacity_methods), (config.sparsity,)
        mem.num_seeds = config.num_seeds if config.seed_ids else config.capacity_seeds
    return mem


def check_data(config, dataset) -> None:
    """Data-dependent checks: classification labels, scoring batches and decoded bits that fit the data."""
    n = len(dataset.y_train)
    if dataset.num_classes == 0:
        raise ConfigError(f"config.task={config.task!r}: mask ensembles redraw class labels; use classification")
    if "imp" in config.methods:
        check_rewind_step(config, train.steps_per_epoch(n, config.batch_size))
    scoring = set(config.methods) - set(pai.DATA_FREE) - set(masking.AFTER_TRAINING)  # PaI methods that use data
    if scoring and config.pai_batches * config.batch_size > n:
        raise ConfigError(f"config.pai_batches={config.pai_batches}: pai_batches * batch_size must be <= {n}")
    if config.noise_bits > n:
        raise ConfigError(f"config.noise_bits={config.noise_bits}: at most the {n} training examples; use 0 to "
                          f"skip the label-noise bound")


def draw_labels(clean_y: jax.Array, num_classes: int, fraction: float, keys: jax.Array) -> jax.Array:
    """[K, n] labels: draw k redraws a ``fraction`` of ``clean_y`` uniformly, with ``keys[k]``."""
    return jax.vmap(lambda k: corrupt_labels(clean_y, num_classes, fraction, k)[0])(keys)


def noise_draws(y: jax.Array, num_classes: int, num_masks: int, num_noisy: int,
                key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(bits [num_masks, num_noisy], labels [num_masks, n]): label noise encoded as fair independent bits. Each of
    the first ``num_noisy`` examples j has an alternative label a_j, uniform over the classes other than y_j and
    fixed by ``key``; draw i gives it the label a_j if bits[i, j] = 1, else y_j. The other examples keep y_j. The
    bits are the only randomness across draws, so Z = bits."""
    alternative_key, bits_key = jax.random.split(key)
    alternative = (y + jax.random.randint(alternative_key, y.shape, 1, num_classes)) % num_classes
    bits = jax.random.bernoulli(bits_key, 0.5, (num_masks, num_noisy))
    noisy = jnp.zeros((num_masks, y.shape[0]), bool).at[:, :num_noisy].set(bits)
    return bits, jnp.where(noisy, alternative, y)


def ensemble(track, setup: common.Setup, seeds: common.Seeds, labels: jax.Array, keys: jax.Array):
    """M[k, r, s, ...] = track(params_s, batch_stats_s, labels[k], keys[k, r, s]): the masks of every (draw, repeat,
    seed), the K · R · S networks being the units of one :func:`jaxprune.parallel.seed_map` call.

    ``track(params, batch_stats, y [n], key) -> masks [stages, ...]`` computes one network's masks on labels y.
    """
    num_draws, repeats, num_seeds = keys.shape
    tile = lambda a: jnp.concatenate([a] * (num_draws * repeats))  # noqa: E731  network (k·R + r)·S + s
    params, batch_stats = jax.tree.map(tile, (seeds.params, seeds.batch_stats))
    net_labels = jnp.repeat(labels, repeats * num_seeds, axis=0)
    out = parallel.seed_map(track, setup.mesh)(params, batch_stats, net_labels, keys.reshape(-1))
    return jax.tree.map(lambda m: m.reshape(num_draws, repeats, num_seeds, *m.shape[1:]), parallel.to_host(out))


def pai_track(method: str, config, setup: common.Setup, params, batch_stats, y, key):
    """[1, ...]: one network's PaI mask at ``config.sparsity`` on labels ``y``, method key ``key``."""
    mask = masking.pai_mask(method, config, setup, params, batch_stats, key, config.sparsity, y)
    return jax.tree.map(lambda m: m[None], mask)


def imp_track(config, setup: common.Setup, tx, densities, params, batch_stats, y, key):
    """[rounds, ...]: one network's IMP mask after each round (``densities``), data order from ``key``."""
    step = functools.partial(
        irp.round_step, train_data=train.Data(setup.train_data.x, y), test_data=setup.test_data,
        model=setup.model, tx=tx, epochs=config.epochs, batch_size=config.batch_size, scope=config.scope)
    state, _ = step(irp.init(params, batch_stats, key), next_density=densities[0],
                    capture_step=config.rewind_step or None)
    def next_round(state, density):
        state = step(state, next_density=density)[0]
        return state, state.mask

    later = jax.lax.scan(next_round, state, jnp.asarray(densities[1:]))[1]
    return jax.tree.map(lambda first, rest: jnp.concatenate([first[None], rest]), state.mask, later)


def training_track(config, setup: common.Setup, tx, params, batch_stats, y, key):
    """[epochs + 1, ...]: one network's largest-|θ_t| mask at ``config.sparsity`` after t = 0..epochs epochs
    of dense training on labels ``y`` (epoch t's data order from fold_in(key, t))."""
    data = train.Data(setup.train_data.x, y)
    prune = lambda p: masks.largest_magnitude(p, config.sparsity, config.scope)  # noqa: E731

    def epoch(state, t):
        state = train.train(state, masks.ones(params), data, jax.random.fold_in(key, t), model=setup.model, tx=tx,
                            epochs=1, batch_size=config.batch_size)[0]
        return state, prune(state.params)

    later = jax.lax.scan(epoch, train.init_state(params, batch_stats, tx), jnp.arange(config.epochs))[1]
    return jax.tree.map(lambda first, rest: jnp.concatenate([first[None], rest]), prune(params), later)


def stages(method: str, config) -> list[float]:
    """Stage labels: IMP densities per round, epochs 0..T for magnitude_after, the single PaI stage."""
    if method == "imp":
        return irp.schedule(config.prune_fraction, targets=[1.0 - config.sparsity])
    if method == "magnitude_after":
        return list(range(config.epochs + 1))
    return [1.0 - config.sparsity]


def method_ensemble(method: str, config, setup: common.Setup, seeds: common.Seeds, labels, keys):
    """Masks M[k, r, s, stage, ...] of ``method`` for labels [K, n] and keys [K, R, S] (module docstring)."""
    tx = train.optimizer_from_config(config, train.steps_per_epoch(len(setup.dataset.y_train), config.batch_size))
    if method in pai.methods():
        track = functools.partial(pai_track, method, config, setup)
    elif method == "imp":
        track = functools.partial(imp_track, config, setup, tx, stages(method, config))
    else:
        track = functools.partial(training_track, config, setup, tx)
    return ensemble(track, setup, seeds, labels, keys)


def flat_masks(stacked, params_one) -> np.ndarray:
    """Host bool [..., num_prunable]: the prunable leaves of masks with extra leading axes, concatenated."""
    leaves = masks.prunable_leaves(parallel.to_host(stacked), params_one)
    return np.concatenate([np.asarray(m).reshape(*m.shape[: m.ndim - p.ndim], -1)
                           for m, p in zip(leaves, masks.prunable_leaves(params_one, params_one))], axis=-1)


def estimate_given_init(flat: np.ndarray, config, key, noise=None) -> tuple[mi.MIResult, list[mi.MIResult]]:
    """(I(M; D | W), per-seed estimates) from flat masks [K, R, S, W]; ``noise`` [K, n] bits (R = 1): the
    noise-bit bound of I(M; Z | W) over them (:func:`jaxprune.mi.noise_bits_bound`)."""
    num_draws, repeats, num_seeds, _ = flat.shape
    options = dict(num_folds=config.num_folds, num_permutations=config.num_permutations,
                   confidence=mi.seed_confidence(config.confidence, num_seeds))
    per_seed = []
    for s in range(num_seeds):
        seed_masks, seed_key = flat[:, :, s].reshape(num_draws * repeats, -1), jax.random.fold_in(key, s)
        if noise is None:
            labels = np.repeat(np.arange(num_draws), repeats)
            per_seed.append(mi.estimate(seed_masks, labels, method=config.estimator, key=seed_key, **options))
        else:
            per_seed.append(mi.noise_bits_bound(seed_masks, noise, key=seed_key, **options))
    return mi.conditional(per_seed), per_seed


def result_dict(result: mi.MIResult) -> dict:
    """MIResult fields plus the null's mean and max."""
    return result._asdict() | {"null_mean": float(np.mean(result.null_bits)),
                               "null_max": float(np.max(result.null_bits))}


def saturated(result: mi.MIResult, max_bits: float) -> bool:
    """Whether the estimate is within its interval of the cap: bits + (bits - lower) >= max_bits (the two-sided
    interval, mirrored about the estimate, reaches log2 K; the estimate may then be the cap, not the truth)."""
    return bool(2 * result.bits - result.lower >= max_bits - 1e-6)


def summary(result: mi.MIResult, per_seed: list[mi.MIResult], expected_kept: float, unpruned: int, max_bits: float,
            proxy: bool, **extra) -> dict:
    """One estimate for results.json: ``extra`` (e.g. the pruning method), the seed mean's MIResult fields (``method``
    is the estimator), per-seed fields, ``saturated`` (:func:`saturated` at ``max_bits``), p_eff (nats,
    :func:`jaxprune.mi.p_eff` of E||m||_0 = ``expected_kept`` + the ``unpruned`` parameters) and its interval,
    ``p_eff_is_proxy`` (the noise-bit bound stands in for I(m; D))."""
    nonzero = expected_kept + unpruned
    return extra | result_dict(result) | {
        "per_seed": [result_dict(r) for r in per_seed],
        "saturated": saturated(result, max_bits),
        "expected_kept": expected_kept,
        "expected_nonzero": nonzero,
        "num_permutations": len(result.null_bits),
        "p_eff_nats": mi.p_eff(nonzero, result.bits),
        "p_eff_nats_interval": [mi.p_eff(nonzero, result.lower), mi.p_eff(nonzero, result.upper)],
        "p_eff_is_proxy": proxy,
        "p_eff_note": mi.P_EFF_NOTE + ("; PROXY: I is the noise-bit bound on I(M; Z | W), not I(m; D)"
                                       if proxy else ""),
    }


def method_results(method, config, setup, seeds, labels, keys, params_one, log, noise=None) -> list[dict]:
    """One summary per stage of ``method``'s ensemble; with ``noise`` [K, n] bits, the noise-bit bound of every
    ``noise_curve_every``-th stage and the last. A
    :data:`DETERMINISTIC` method's mask is computed once per seed and repeated over draws and repeats."""
    if method in DETERMINISTIC:
        one = flat_masks(method_ensemble(method, config, setup, seeds, labels[:1], keys[:1, :1]), params_one)
        flat = np.broadcast_to(one, (*keys.shape[:2], *one.shape[2:]))
    else:
        flat = flat_masks(method_ensemble(method, config, setup, seeds, labels, keys), params_one)
    log(f"{method}: masks {flat.shape[:-1]} x {flat.shape[-1]} weights")
    max_bits = float(np.log2(config.num_draws)) if noise is None else float(noise.shape[1])
    out = []
    names = stages(method, config)
    every = config.noise_curve_every if noise is not None else 1
    for i, stage in [(i, x) for i, x in enumerate(names) if i % every == 0 or i == len(names) - 1]:
        result, per_seed = estimate_given_init(flat[:, :, :, i], config, jax.random.key(config.seed), noise)
        out.append(summary(result, per_seed, float(flat[:, :, :, i].sum(-1).mean()), unpruned(params_one), max_bits,
                           proxy=noise is not None, pruning=method,
                           stage=stage, density=float(flat[:, :, :, i].mean())))
    last = out[-1]
    log(f"{method}: {'I(m; Z | W)' if noise is not None else 'I(m; D | W)'} = {last['bits']:.4f} bits "
        f"[{last['lower']:.4f}, {last['upper']:.4f}], null mean {last['null_mean']:.4f} max {last['null_max']:.4f} "
        f"({last['method']}{', saturated' if last['saturated'] else ''})")
    return out


def unpruned(params) -> int:
    """The number of parameters no mask prunes (biases, normalization, kernels outside ``config.prunable``)."""
    kept = jax.tree.leaves(masks.prunable(params))
    return int(sum(np.size(p) for p, k in zip(jax.tree.leaves(params), kept) if not k))


def streamed(writer: metrics.MetricsWriter, design: str, rows: list[dict]) -> list[dict]:
    """``rows`` (one method's estimates, stage by stage), once appended to metrics.jsonl with their ``design``
    (draws or noise_bits) and written to TensorBoard (tag ``<design>/<method>/bits``, step = the stage's index)."""
    writer.append([r | {"design": design} for r in rows])
    for i, r in enumerate(rows):
        writer.sweep_scalars(i, {f"{design}/{r['pruning']}/bits": r["bits"]})
    return rows


def shown_upper(row: dict, one_sided: bool) -> float:
    """Upper end drawn for ``row``: its interval's, or the estimate itself for a one-sided bound (the noise-bit
    bound's upper end is the design's ceiling, not a measurement, and would dwarf every estimate)."""
    return row["bits"] if one_sided else row["upper"]


def null_label(rows: list[dict]) -> str:
    """'permutation null (max of P)', or '(1 permutation)' when the null is a single shuffle."""
    p = rows[0]["num_permutations"]
    return "permutation null (1 permutation)" if p == 1 else f"permutation null (max of {p})"


def mi_bars(path: str, rows: list[dict], title: str, ylabel: str = "I(m; D | W) [bits]",
            one_sided: bool = False) -> None:
    """Bar per method at its estimate, error bar over its interval (``one_sided``: down to its lower end only), a
    cross at the permutation null's max; a saturated estimate (within its interval of the cap) is hatched."""
    fig, axes = plotting.figure()
    ax, x = axes[0][0], np.arange(len(rows))
    bits = np.array([r["bits"] for r in rows])
    errors = np.array([[r["bits"] - r["lower"] for r in rows], [shown_upper(r, one_sided) - r["bits"] for r in rows]])
    bars = ax.bar(x, bits, yerr=errors, capsize=4, color="tab:blue", alpha=0.7,
                  label="estimate, lower end" if one_sided else "estimate, interval")
    for bar, row in zip(bars, rows):
        if row["saturated"]:
            bar.set_hatch("//")
            ax.annotate("saturated", (bar.get_x() + bar.get_width() / 2, row["bits"]), ha="center", va="bottom",
                        fontsize=7, color="tab:red")
    ax.scatter(x, [r["null_max"] for r in rows], marker="x", color="black", zorder=3, label=null_label(rows))
    ax.set_xticks(x, [r["pruning"] for r in rows])
    ax.set_ylabel(ylabel)
    ax.set_title(plotting.wrap(title, 50))
    plotting.legend_outside(fig)
    plotting.save(fig, path)


def mi_curve(path: str, rows: list[dict], xlabel: str, title: str, one_sided: bool = False) -> None:
    """Estimate against the stage with its interval (``one_sided``: up from its lower end) shaded and the null's
    max dashed."""
    fig, axes = plotting.figure()
    ax, x = axes[0][0], [r["stage"] for r in rows]
    ax.plot(x, [r["bits"] for r in rows], marker="o", label="I(m; D | W)")
    ax.fill_between(x, [r["lower"] for r in rows], [shown_upper(r, one_sided) for r in rows], alpha=0.2,
                    linewidth=0)
    ax.plot(x, [r["null_max"] for r in rows], "k--", label=null_label(rows))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("bits")
    ax.set_title(plotting.wrap(title, 50))
    ax.grid(alpha=0.3)
    plotting.legend_outside(fig)
    plotting.save(fig, path)


def write_outputs(workdir: str, config, rows: dict, noise_rows: dict) -> None:
    """The figures."""
    if rows:
        mi_bars(os.path.join(workdir, "mi_by_method.png"), [rows[m][-1] for m in config.methods],
                f"I(m; D | W) at sparsity {config.sparsity} ({config.num_draws} draws x {config.repeats} repeats)")
    if noise_rows:
        mi_bars(os.path.join(workdir, "mi_noise_bits_by_method.png"), [noise_rows[m][-1] for m in noise_rows],
                f"Noise-bit bound at sparsity {config.sparsity} ({config.noise_masks} masks, {config.noise_bits} bits)",
                ylabel="I(m; Z | W) >= Σ_j I(m; z_j) [bits]", one_sided=True)
    for group, design in ((rows, "I(m; D | W)"), (noise_rows, "I(m; Z | W), noise-bit bound")):
        suffix = "" if group is rows else "_noise_bits"
        if "magnitude_after" in group:
            mi_curve(os.path.join(workdir, f"mi_vs_training_time{suffix}.png"), group["magnitude_after"],
                     "epochs of dense training before magnitude pruning",
                     f"Information gained during training: {design}", one_sided=group is noise_rows)
        if "imp" in group:
            mi_curve(os.path.join(workdir, f"mi_vs_imp_round{suffix}.png"), group["imp"],
                     "density after the IMP round", f"IMP across rounds: {design}", one_sided=group is noise_rows)


def capacity(config, workdir: str) -> dict:
    """{method: memorization capacity} at ``config.sparsity``: the memorization experiment
    (:func:`jaxprune.experiments.memorization.run`, its own outputs under ``workdir``) on ``capacity_methods``, with
    its convergence rule; per method the memorized fraction per seed, its mean, the mean number of points and the
    epochs run."""
    os.makedirs(workdir, exist_ok=True)
    result = memorization.run(memorization_config(config), workdir)
    n = result["num_examples"]
    return {r["method"]: {"memorized_fraction": np.asarray(r["train_accuracy"]).tolist(),
                          "memorized_fraction_mean": float(np.mean(r["train_accuracy"])),
                          "memorized_points_mean": float(np.mean(r["train_accuracy"]) * n),
                          "epochs": np.asarray(r["epochs"]).tolist()}
            for r in result["results"]}


def headline(noise_rows: dict, capacities: dict) -> list[dict]:
    """Per method (in decreasing order of the bound): the noise-bit bound in bits with its interval and null,
    E||m||_0, p_eff (nats) and the memorized fraction at the same sparsity."""
    table = []
    for method, stage_rows in noise_rows.items():
        row = stage_rows[-1]
        table.append({"method": method, "bits": row["bits"], "lower": row["lower"], "upper": row["upper"],
                      "null_max": row["null_max"], "expected_kept": row["expected_kept"],
                      "expected_nonzero": row["expected_nonzero"], "p_eff_nats": row["p_eff_nats"],
                      "p_eff_is_proxy": row["p_eff_is_proxy"], "num_permutations": row["num_permutations"],
                      "memorized_fraction": capacities.get(method, {}).get("memorized_fraction_mean")})
    return sorted(table, key=lambda r: -r["bits"])


def noise_bit_rows(config, setup: common.Setup, seeds: common.Seeds, writer: metrics.MetricsWriter, xi_key,
                   noise_key, params_one, log) -> dict:
    """{method: rows} of the noise-bit design (:func:`noise_draws`: ``noise_masks`` ensembles, each with its own
    draw of ``noise_bits`` random labels) for every method of ``config.noise_methods``, streamed to ``writer``:
    the bound on I(m; Z | W). {} when ``config.noise_bits`` is 0."""
    if not config.noise_bits:
        return {}
    bits, noise_labels = noise_draws(setup.dataset.y_train, setup.dataset.num_classes, config.noise_masks,
                                     config.noise_bits, noise_key)
    noise_keys = jax.random.split(jax.random.fold_in(xi_key, 1), (config.noise_masks, 1, config.num_seeds))
    bits = np.asarray(bits)
    return {m: streamed(writer, "noise_bits", method_results(m, config, setup, seeds, noise_labels, noise_keys,
                                                             params_one, log, bits))
            for m in common.staged(log, "noise-bit ensembles and I(m; Z | W)", config.noise_methods, "methods")}


def log_headline(log, table: list[dict]) -> None:
    """One console line per row of :func:`headline`."""
    for r in table:
        log(f"{r['method']:>15}: I >= {r['bits']:.1f} bits [{r['lower']:.1f}, {r['upper']:.0f}] (null max "
            f"{r['null_max']:.1f}), kept weights {r['expected_kept']:.0f}, E||m||_0 {r['expected_nonzero']:.0f} "
            f"(every kept parameter), p_eff {r['p_eff_nats']:.1f} nats"
            + (f", memorized {r['memorized_fraction']:.3f}" if r["memorized_fraction"] is not None else ""))


def results_of(config, rows: dict, noise_rows: dict, table: list[dict], capacities: dict, params_one) -> dict:
    """The ``results.json`` record: the design, the headline ``table``, every method's final estimate and the
    stage-by-stage rows of both designs, the capacities."""
    final = {m: rows[m][-1] for m in config.methods}
    return {
        "experiment": "mutual_information",
        "units": "MI in bits (mi.MIResult); " + mi.P_EFF_NOTE,
        "design": {"num_draws": config.num_draws, "repeats": config.repeats, "num_seeds": config.num_seeds,
                   "sparsity": config.sparsity, "max_bits": float(np.log2(config.num_draws)),
                   "noise_masks": config.noise_masks, "noise_bits": config.noise_bits,
                   "num_prunable": int(sum(np.size(p) for p in masks.prunable_leaves(params_one, params_one)))},
        "headline": table,
        "methods": final,
        "ordering": sorted(final, key=lambda m: -final[m]["bits"]),
        "imp_rounds": rows.get("imp", []),
        "training_time": rows.get("magnitude_after", []),
        "noise_bits_bound": {m: r[-1] for m, r in noise_rows.items()},
        "noise_bits_imp_rounds": noise_rows.get("imp", []),
        "noise_bits_training_time": noise_rows.get("magnitude_after", []),
        "capacity": capacities,
    }


def run(config, workdir: str) -> dict:
    """The experiment end to end; returns the results written to ``results.json``."""
    log = common.Progress("mutual_information")
    setup = common.setup(config)
    check_data(config, setup.dataset)
    seeds = common.init_seeds(setup)
    params_one = jax.tree.map(lambda p: p[0], seeds.params)
    draws_key, xi_key, noise_key = jax.random.split(jax.random.fold_in(jax.random.key(config.data_seed), 1), 3)
    shape = (config.num_draws, config.repeats, config.num_seeds)
    keys = jax.random.split(xi_key, shape)
    labels = draw_labels(setup.dataset.clean_y_train, setup.dataset.num_classes, config.draw_noise,
                         jax.random.split(draws_key, config.num_draws))
    log(f"{config.num_draws} draws x {config.repeats} repeats x {config.num_seeds} seeds, sparsity "
        f"{config.sparsity}, {config.model} {tuple(config.widths)} on {config.dataset} ({len(labels[0])} examples)")
    writer = metrics.fresh(workdir, config.num_seeds)
    rows = {m: streamed(writer, "draws", method_results(m, config, setup, seeds, labels, keys, params_one, log))
            for m in common.staged(log, "mask ensembles and I(m; D | W)", config.methods, "methods")}
    noise_rows = noise_bit_rows(config, setup, seeds, writer, xi_key, noise_key, params_one, log)
    writer.close()
    capacities = capacity(config, os.path.join(workdir, "memorization")) if config.capacity else {}
    if parallel.is_primary():
        write_outputs(workdir, config, rows, noise_rows)
    table = headline(noise_rows, capacities)
    log_headline(log, table)
    return results_of(config, rows, noise_rows, table, capacities, params_one)
