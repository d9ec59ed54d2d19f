"""Masked training: pruned weights stay exactly zero, evaluation is exact, divergence is caught per seed."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import assert_close_across_programs

from jaxprune import masks, train


class TinyMLP(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Dense(16)(x))
        x = nn.BatchNorm(use_running_average=not train)(x)
        return nn.Dense(3)(x)


def toy_data(n=96, d=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0.5).astype(np.int32)
    return train.Data(jnp.asarray(x), jnp.asarray(y))


def setup(optimizer, weight_decay=5e-4):
    model = TinyMLP()
    data = toy_data()
    params, batch_stats = train.init_variables(model, jax.random.key(0), data.x[0])
    tx = train.make_optimizer(optimizer, 1e-2, total_steps=100, weight_decay=weight_decay)
    mask = masks.from_scores(jax.tree.map(lambda p: jax.random.normal(jax.random.key(1), p.shape), params), params, 0.7)
    return model, data, params, batch_stats, tx, mask


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_pruned_weights_stay_exactly_zero_through_training(optimizer):
    model, data, params, batch_stats, tx, mask = setup(optimizer)
    state = train.init_state(masks.apply(params, mask), batch_stats, tx)
    state, metrics, _ = jax.jit(
        lambda s: train.train(s, mask, data, jax.random.key(2), model=model, tx=tx, epochs=25, batch_size=16)
    )(state)
    for p, m in zip(masks.prunable_leaves(state.params, params), masks.prunable_leaves(mask, params)):
        assert np.all(np.asarray(p)[~np.asarray(m)] == 0.0)
        assert np.count_nonzero(np.asarray(p)[np.asarray(m)]) == int(m.sum())  # survivors moved, not frozen
    assert metrics["loss"][-1] < metrics["loss"][0]  # it learns despite the mask
    assert int(state.step) == 25 * (96 // 16)
    assert int(state.failed_step) == -1


def test_sgd_without_masking_updates_would_revive_weights():
    """The control for the test above: weight decay + momentum move a zeroed weight unless updates are masked."""
    model, data, params, batch_stats, _, mask = setup("sgd")
    tx = optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(1e-2, momentum=0.9))
    zeroed = masks.apply(params, mask)

    @jax.jit
    def unmasked_step(p):
        grads = jax.grad(lambda p: jnp.mean(train.loss_and_accuracy(
            train.apply_model(model, p, batch_stats, data.x, train=True)[0], data.y)[0]))(p)
        updates, _ = tx.update(grads, tx.init(p), p)
        return optax.apply_updates(p, updates)

    revived = unmasked_step(zeroed)
    assert any(np.any(np.asarray(p)[~np.asarray(m)] != 0) for p, m in
               zip(masks.prunable_leaves(revived, params), masks.prunable_leaves(mask, params)))


def test_evaluate_matches_direct_computation_with_padding():
    model, data, params, batch_stats, _, _ = setup("sgd")
    logits = model.apply({"params": params, "batch_stats": batch_stats}, data.x, train=False)
    expected_loss = optax.softmax_cross_entropy_with_integer_labels(logits, data.y).mean()
    expected_acc = (logits.argmax(-1) == data.y).mean()
    out = train.evaluate(params, batch_stats, data, model=model, batch_size=40)  # 96 = 40 + 40 + 16 (padded)
    assert_close_across_programs(out["loss"], expected_loss, rtol=1e-5)
    assert_close_across_programs(out["accuracy"], expected_acc, rtol=1e-6)


def test_regression_loss_is_half_squared_error():
    logits = jnp.array([[1.0], [3.0]])
    loss, acc = train.loss_and_accuracy(logits, jnp.array([0.0, 1.0]))
    np.testing.assert_allclose(loss, [0.5, 2.0])
    assert float(acc.sum()) == 0.0


def test_capture_step_records_params_after_that_many_updates():
    model, data, params, batch_stats, tx, mask = setup("sgd")
    state = train.init_state(masks.apply(params, mask), batch_stats, tx)
    run = lambda epochs, capture: train.train(state, mask, data, jax.random.key(2), model=model, tx=tx,  # noqa: E731
                                             epochs=epochs, batch_size=16, capture_step=capture)
    _, _, (captured, _) = jax.jit(lambda: run(2, 7))()
    # Reference: epoch 0 has 6 steps, so 7 updates = all of epoch 0 plus the first step of epoch 1.
    s = state
    step = jax.jit(lambda s, x, y: train.train_step(s, mask, x, y, model=model, tx=tx)[0])
    for e in range(2):
        order = jax.random.permutation(jax.random.fold_in(jax.random.key(2), e), 96)
        for i in range(6):
            if int(s.step) == 7:
                break
            idx = order[i * 16:(i + 1) * 16]
            s = step(s, data.x[idx], data.y[idx])
    for a, b in zip(jax.tree.leaves(captured), jax.tree.leaves(s.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_non_finite_loss_marks_the_seed_and_freezes_it_without_touching_others():
    model, data, params, batch_stats, tx, mask = setup("sgd", weight_decay=0.0)
    bad = jax.tree.map(lambda p: p, params)
    bad["Dense_1"]["kernel"] = bad["Dense_1"]["kernel"].at[0, 0].set(jnp.inf)  # inf logits -> NaN loss
    stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), params, bad)
    states = jax.vmap(lambda p: train.init_state(p, batch_stats, tx))(stacked)
    out, _, _ = jax.jit(jax.vmap(lambda s: train.train(s, masks.ones(params), data, jax.random.key(0),
                                                       model=model, tx=tx, epochs=2, batch_size=16)))(states)
    np.testing.assert_array_equal(out.failed_step, [-1, 0])
    assert all(np.all(np.isfinite(np.asarray(x[0]))) for x in jax.tree.leaves(out.params))
    # The failed seed's weights are frozen at their last healthy values (its initial ones here).
    for a, b in zip(jax.tree.leaves(out.params), jax.tree.leaves(stacked)):
        np.testing.assert_array_equal(np.asarray(a[1]), np.asarray(b[1]))


def test_unknown_optimizer_and_schedule_raise():
    with pytest.raises(ValueError, match="optimizer"):
        train.make_optimizer("rmsprop", 0.1, total_steps=10)
    with pytest.raises(ValueError, match="lr_schedule"):
        train.make_optimizer("sgd", 0.1, total_steps=10, schedule="linear")


def test_training_cut_into_segments_anywhere_equals_one_run_bit_for_bit():
    """train_steps from (state, t) alone continues a run exactly: 3 epochs of 6 steps cut at steps 4 and 13
    (mid-epoch) give the same weights, optimizer state and per-step metrics as one call."""
    model, data, params, batch_stats, tx, mask = setup("adam")
    state = train.init_state(masks.apply(params, mask), batch_stats, tx)
    key = jax.random.key(3)
    segment = jax.jit(lambda s, t, n: train.train_steps(s, mask, data, key, t, model=model, tx=tx, num_steps=n,
                                                         batch_size=16), static_argnums=2)
    whole, whole_metrics, _ = segment(state, 0, 18)
    s, pieces = state, []
    for first, n in ((0, 4), (4, 9), (13, 5)):
        s, metrics, _ = segment(s, jnp.int32(first), n)
        pieces.append(metrics["loss"])
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(s)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(whole_metrics["loss"], np.concatenate(pieces))
    # and train() is that run with per-epoch means
    _, epochs, _ = jax.jit(lambda: train.train(state, mask, data, key, model=model, tx=tx, epochs=3,
                                               batch_size=16))()
    assert_close_across_programs(epochs["loss"], np.asarray(whole_metrics["loss"]).reshape(3, 6).mean(1), rtol=1e-6)


def test_gradient_noise_zero_equals_plain_training():
    """σ = 0 given as a number is plain training bit for bit (no draw is made); σ = 0 traced (a vmapped sweep over σ)
    adds exact zeros but is another compiled program, so it equals plain training up to float rounding (XLA may fuse
    the optimizer's arithmetic differently: measured 1-ulp differences). σ > 0: the next test."""
    model, data, params, batch_stats, tx, mask = setup("adam")
    state = train.init_state(masks.apply(params, mask), batch_stats, tx)
    run = lambda s, std: train.train(s, mask, data, jax.random.key(2), model=model, tx=tx, epochs=3,  # noqa: E731
                                     batch_size=16, gradient_noise_std=std)
    plain = jax.jit(lambda s: train.train(s, mask, data, jax.random.key(2), model=model, tx=tx, epochs=3,
                                          batch_size=16))(state)[0]
    zero = jax.jit(lambda s: run(s, 0.0))(state)[0]
    traced = jax.jit(run)(state, jnp.zeros(()))[0]
    for a, b, c in zip(*(jax.tree.leaves(s.params) for s in (plain, zero, traced))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert_close_across_programs(np.asarray(c), np.asarray(a), rtol=1e-5)


def test_gradient_noise_is_iid_gaussian_on_every_entry_from_its_own_stream():
    """One SGD step (lr η, no momentum): noisy − plain = −η σ ξ with ξ the N(0, I) draw of the noise stream, zero
    on pruned weights; the data order is unchanged (same loss)."""
    model, data, params, batch_stats, _, mask = setup("sgd")
    tx = train.make_optimizer("sgd", 0.5, total_steps=1, momentum=0.0)
    state = train.init_state(masks.apply(params, mask), batch_stats, tx)
    key, sigma = jax.random.key(5), 0.3
    run = lambda std: train.train_steps(state, mask, data, key, 0, model=model, tx=tx, num_steps=1,  # noqa: E731
                                        batch_size=16, gradient_noise_std=std)
    (plain, plain_metrics, _), (noisy, noisy_metrics, _) = run(0.0), run(sigma)
    assert float(plain_metrics["loss"][0]) == float(noisy_metrics["loss"][0])
    noise_key = jax.random.fold_in(jax.random.fold_in(key, train.NOISE_STREAM), 0)
    xi = train.add_gradient_noise(jax.tree.map(jnp.zeros_like, params), 1.0, noise_key)
    draws = []
    for p, q, e, m in zip(*(jax.tree.leaves(t) for t in (plain.params, noisy.params, xi, mask))):
        expected = np.where(np.asarray(m), -0.5 * sigma * np.asarray(e), 0.0)
        np.testing.assert_allclose(np.asarray(q) - np.asarray(p), expected, rtol=1e-4, atol=1e-6)
        draws.append(np.asarray(e).ravel())
    draws = np.concatenate(draws)
    assert abs(draws.mean()) < 0.1 and abs(draws.std() - 1.0) < 0.1  # standard normal entries
