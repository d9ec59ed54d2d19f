"""IRP: densities per round, survival counts against the mask history, vmapped == per-seed, rewinding."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import irp as irp_config
from jaxprune import irp, masks
from jaxprune.experiments import common
from jaxprune.experiments import irp as irp_experiment


def tiny_config(**overrides):
    c = irp_config.get_config()
    c.update(dict(dataset="gaussian", labels="teacher", num_examples=256, num_test=128, input_dim=8, num_classes=3,
                  widths=(24, 16), num_seeds=3, epochs=2, batch_size=32, rounds=4, prune_fraction=0.3))
    c.update(overrides)
    return c


@pytest.fixture(scope="module")
def tiny_run():
    config = tiny_config()
    setup = common.setup(config)
    state, history, init = irp_experiment.run_rounds(config, setup, irp.schedule(config.prune_fraction, config.rounds))
    return config, setup, state, history, init


def test_density_after_k_rounds_is_geometric_up_to_rounding(tiny_run):
    config, _, state, history, init = tiny_run
    one = jax.tree.map(lambda x: x[0], init["seeds"].params)
    n = masks.count(masks.ones(one), one)[1]
    for r, m in enumerate(history):
        np.testing.assert_allclose(m["density"], round((1 - config.prune_fraction) ** r * n) / n, atol=0.5 / n)
    final = jax.vmap(lambda mk: masks.density(mk, one))(state.mask)
    np.testing.assert_allclose(final, round(0.7**4 * n) / n, atol=0.5 / n)


def test_survival_counts_are_in_range_and_encode_the_final_mask(tiny_run):
    config, _, state, _, init = tiny_run
    one = jax.tree.map(lambda x: x[0], init["seeds"].params)
    counts = masks.prunable_leaves(state.survival, one)
    final = masks.prunable_leaves(state.mask, one)
    for c, m in zip(counts, final):
        c, m = np.asarray(c), np.asarray(m)
        assert c.min() >= 0 and c.max() <= config.rounds
        np.testing.assert_array_equal(c == config.rounds, m)  # survived every round <=> in the final mask
    # Number of weights with count >= r equals the kept count after r rounds.
    flat = np.concatenate([np.asarray(c).reshape(config.num_seeds, -1) for c in counts], axis=1)
    n = flat.shape[1]
    for r in range(1, config.rounds + 1):
        np.testing.assert_array_equal((flat >= r).sum(1), round(0.7**r * n))


def test_vmapped_seed_equals_single_seed_run(tiny_run):
    config, setup, state, _, _ = tiny_run
    for i in (0, 2):
        one_seed = dataclasses.replace(setup, keys=setup.keys[i:i + 1])
        single, _, _ = irp_experiment.run_rounds(config, one_seed, irp.schedule(config.prune_fraction, config.rounds))
        for a, b in zip(jax.tree.leaves(state.mask), jax.tree.leaves(single.mask)):
            np.testing.assert_array_equal(a[i], b[0])
        for a, b in zip(jax.tree.leaves(state.survival), jax.tree.leaves(single.survival)):
            np.testing.assert_array_equal(a[i], b[0])


def test_rewind_to_init_keeps_initial_values_and_rewind_step_captures_later_ones(tiny_run):
    config, setup, state, _, init = tiny_run
    for a, b in zip(jax.tree.leaves(state.rewind_params), jax.tree.leaves(init["seeds"].params)):
        np.testing.assert_array_equal(a, b)
    late = tiny_config(rewind_step=5, rounds=1)
    state5, _, init5 = irp_experiment.run_rounds(late, setup, irp.schedule(0.3, 1))
    moved = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(state5.rewind_params),
                                                      jax.tree.leaves(init5["seeds"].params))]
    assert all(moved)


def test_magnitude_prune_removes_the_smallest_surviving_weights():
    params = {"d": {"kernel": jnp.array([[0.5, -3.0, 0.1], [2.0, -0.2, 1.0]])}}
    mask = {"d": {"kernel": jnp.array([[True, True, True], [False, True, True]])}}
    new = irp.magnitude_prune(params, mask, density=0.5)  # keep 3 of 6 among the 5 alive: -3, 1.0, 0.5
    np.testing.assert_array_equal(new["d"]["kernel"], [[True, True, False], [False, False, True]])


def test_schedule_passes_through_every_target_and_stops_at_the_smallest():
    assert irp.schedule(0.5, 3) == [0.5, 0.25, 0.125]
    d = irp.schedule(0.5, targets=[0.3, 0.1])
    assert d == [0.5, 0.3, 0.25, 0.125, 0.1]
    assert all(a > b for a, b in zip(d, d[1:]))


def test_a_diverging_seed_is_recorded_and_excluded_from_means(tmp_path, monkeypatch):
    config = tiny_config(num_seeds=2, rounds=2)
    real_init = common.init_seeds

    def init_with_broken_seed_1(setup):
        seeds = real_init(setup)
        kernel = seeds.params["Dense_2"]["kernel"]
        params = {**seeds.params, "Dense_2": {**seeds.params["Dense_2"], "kernel": kernel.at[1, 0, 0].set(jnp.inf)}}
        return seeds._replace(params=params)

    monkeypatch.setattr(common, "init_seeds", init_with_broken_seed_1)
    results = irp_experiment.run(config, str(tmp_path))
    assert results["failed_seeds"] == [{"seed": 1, "round": 0, "step": 0}]
    assert results["num_seeds_in_means"] == 1
    np.testing.assert_allclose(results["mean_test_accuracy"], np.asarray(results["test_accuracy"])[0])


def test_snip_criterion_prunes_by_pai_snip_on_the_trained_weights():
    """criterion='snip': the round keeps the top pai.score('snip', …) of the TRAINED weights (eval mode) on the
    round's criterion batch, among the survivors; not the magnitude mask."""
    from jaxprune import pai, train

    config = tiny_config(num_seeds=1, epochs=1)
    setup = common.setup(config)
    seeds = jax.tree.map(lambda a: a[0], common.init_seeds(setup))
    spe = train.steps_per_epoch(setup.train_data.x.shape[0], config.batch_size)
    tx = train.optimizer_from_config(config, spe)
    state = irp.init(seeds.params, seeds.batch_stats, seeds.order_keys)
    state = state.replace(mask=masks.largest_magnitude(seeds.params, 0.2))  # a round after the first
    progress = irp.round_begin(state, tx=tx, num_steps=spe)
    progress = irp.round_train(state, progress, setup.train_data, 0, model=setup.model, tx=tx, num_steps=spe,
                               batch_size=config.batch_size)
    end = dict(model=setup.model, steps_per_epoch=spe)
    snip, _ = irp.round_end(state, progress, setup.test_data, 0.5, setup.train_data, criterion="snip",
                            criterion_examples=64, **end)
    magnitude, _ = irp.round_end(state, progress, setup.test_data, 0.5, **end)
    trained = progress.train
    batch = irp.criterion_batch(state, setup.train_data, 64)
    assert batch[0].shape[0] == 64
    scores = pai.score("snip", train.apply_fn_for(setup.model, trained.batch_stats), trained.params, batch, None)
    expected = masks.from_scores(masks.restrict(scores, state.mask), seeds.params, 0.5)
    same = lambda a, b: all(bool(jnp.all(x == y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))  # noqa: E731
    assert same(snip.mask, expected) and not same(snip.mask, magnitude.mask)
    assert all(bool(jnp.all(~n | o)) for n, o in zip(jax.tree.leaves(snip.mask), jax.tree.leaves(state.mask)))


def test_linear_schedule_removes_equal_shares_of_the_original_weights():
    linear = irp.schedule(0.4, 8, kind="linear")
    np.testing.assert_allclose(np.diff([1.0, *linear]), -(1 - 0.6**8) / 8)
    np.testing.assert_allclose(linear[-1], irp.schedule(0.4, 8)[-1])
