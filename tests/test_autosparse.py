"""Tests of jaxprune.autosparse against written-down definitions (rows, gradients, fits, correlations)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close_across_programs

from jaxprune import autosparse, masks, pai, stats
from jaxprune.errors import ConfigError

ROUNDS = 5
CPU_KINDS = [k for k in autosparse.KINDS if k != "image"]  # 'image' (a ResNet-18 per weight): its own tiny test


class TinyConvNet(nn.Module):
    """Conv 3x3 (2 -> 4 channels) -> Dense 100 -> 6 -> Dense 6 -> 3; prunable: three kernels."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3), padding="VALID")(x))
        x = nn.relu(nn.Dense(6)(x.reshape(x.shape[0], -1)))
        return nn.Dense(3)(x)


# (fan_in, fan_out, kind) of Conv_0 [3,3,2,4], Dense_0 [64,6], Dense_1 [6,3], in leaf order.
EXPECTED_LAYERS = [(18, 36, 1.0), (64, 6, 0.0), (6, 3, 0.0)]


@pytest.fixture(scope="module")
def net():
    model = TinyConvNet()
    kx, ky, kp = jax.random.split(jax.random.PRNGKey(0), 3)
    batch = (jax.random.normal(kx, (8, 6, 6, 2)), jax.random.randint(ky, (8,), 0, 3))
    params = model.init(kp, batch[0])["params"]
    return (lambda p, x: model.apply({"params": p}, x)), params, batch


def planted_survival(params):
    """survival = (flat index * 7 + layer) % (ROUNDS + 1) on prunable leaves; -1 (must be ignored) elsewhere."""
    prunable = jax.tree.leaves(masks.prunable(params))
    leaves, treedef = jax.tree.flatten(params)
    out, layer = [], 0
    for p, keep in zip(leaves, prunable):
        if keep:
            out.append(((np.arange(p.size) * 7 + layer) % (ROUNDS + 1)).reshape(p.shape).astype(np.int32))
            layer += 1
        else:
            out.append(np.full(p.shape, -1, np.int32))
    return jax.tree.unflatten(treedef, out)


def test_dataset_rows_line_up_with_weights(net, tmp_path):
    apply_fn, params, batch = net
    grads = autosparse.init_gradients(apply_fn, params, batch)
    data = autosparse.build_dataset(params, grads, planted_survival(params), ROUNDS)
    kernels = [np.asarray(k) for k in masks.prunable_leaves(params, params)]
    kernel_grads = [np.asarray(g) for g in masks.prunable_leaves(grads, params)]
    layer, index = np.asarray(data["layer"]), np.asarray(data["index"])
    assert data["x"].shape == (sum(k.size for k in kernels), 6) and index.dtype == np.int64
    # Every weight appears once, in layer then flat-index order.
    np.testing.assert_array_equal(layer, np.repeat(np.arange(3), [k.size for k in kernels]))
    np.testing.assert_array_equal(index, np.concatenate([np.arange(k.size) for k in kernels]))
    x = np.asarray(data["x"])
    planted = ((index * 7 + layer) % (ROUNDS + 1)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(data["y"]), planted / np.float32(ROUNDS))
    np.testing.assert_array_equal(x[:, 0], [kernels[l].ravel()[i] for l, i in zip(layer, index)])
    np.testing.assert_array_equal(x[:, 1], [kernel_grads[l].ravel()[i] for l, i in zip(layer, index)])
    for l, (fan_in, fan_out, kind) in enumerate(EXPECTED_LAYERS):
        expected = np.array([l / 3, np.log(fan_in), np.log(fan_out), kind], np.float32)
        assert_close_across_programs(x[layer == l, 2:], np.broadcast_to(expected, (np.sum(layer == l), 4)), rtol=1e-6)
    path = tmp_path / "irp.npz"
    source = {"model": "tiny", "rounds": ROUNDS, "seeds": [0]}
    autosparse.save_dataset(str(path), data, source)
    loaded, loaded_source = autosparse.load_dataset(str(path))
    assert loaded_source == source
    for k in ("x", "y", "layer", "index"):
        assert loaded[k].dtype == np.asarray(data[k]).dtype
        np.testing.assert_array_equal(loaded[k], np.asarray(data[k]))


def test_init_gradients_match_softmax_regression_formula():
    """For logits = x W: ∂ mean CE / ∂W = xᵀ (softmax(xW) - onehot(y)) / B, in float64."""
    kx, ky, kw = jax.random.split(jax.random.PRNGKey(1), 3)
    x, labels = jax.random.normal(kx, (16, 5)), jax.random.randint(ky, (16,), 0, 4)
    params = {"kernel": jax.random.normal(kw, (5, 4))}
    grads = autosparse.init_gradients(lambda p, x: x @ p["kernel"], params, (x, labels))
    xs, w = np.asarray(x, np.float64), np.asarray(params["kernel"], np.float64)
    logits = xs @ w
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    expected = xs.T @ (probs - np.eye(4)[np.asarray(labels)]) / 16
    np.testing.assert_allclose(grads["kernel"], expected, rtol=1e-5, atol=1e-6)


def test_feature_sets_select_columns(net):
    apply_fn, params, batch = net
    grads = autosparse.init_gradients(apply_fn, params, batch)
    kernel, grad = masks.prunable_leaves(params, params)[1], masks.prunable_leaves(grads, params)[1]
    only_grad = autosparse.features(params, grads, feature_set=("grad",), descriptors=False)[1]
    grad_param = autosparse.features(params, grads, feature_set=("grad", "param"))[1]
    only_param = autosparse.features(params, None, feature_set=("param",))[1]
    np.testing.assert_array_equal(only_grad[..., 0], grad)
    assert only_grad.shape == (*kernel.shape, 1) and grad_param.shape == only_param.shape[:-1] + (6,)
    np.testing.assert_array_equal(grad_param[..., :2], jnp.stack([grad, kernel], -1))
    np.testing.assert_array_equal(only_param[..., 0], kernel)
    for bad in [(), ("hessian",), ("param", "param")]:
        with pytest.raises(ConfigError, match="feature_set"):
            autosparse.features(params, grads, feature_set=bad)
    with pytest.raises(ConfigError, match="grads=None"):
        autosparse.features(params, None)


def test_features_vmap_over_seeds(net):
    apply_fn, params, batch = net
    stacked = jax.tree.map(lambda p: jnp.stack([p, 2 * p]), params)
    grads = jax.vmap(autosparse.init_gradients, in_axes=(None, 0, None))(apply_fn, stacked, batch)
    build = jax.jit(jax.vmap(autosparse.build_dataset, in_axes=(0, 0, None, None)), static_argnums=3)
    data = build(stacked, grads, planted_survival(params), ROUNDS)
    single = autosparse.build_dataset(
        jax.tree.map(lambda p: p[1], stacked), jax.tree.map(lambda g: g[1], grads), planted_survival(params), ROUNDS
    )
    assert_close_across_programs(data["x"][1], single["x"], rtol=1e-6)
    np.testing.assert_array_equal(data["index"][0], single["index"])


def test_window_sampler_draws_only_windows_inside_one_layer():
    layer = jnp.array([0] * 10 + [1] * 3 + [2] * 7 + [0] * 5, jnp.int32)  # 2 datasets concatenated
    index = jnp.array(list(range(10)) + list(range(3)) + list(range(7)) + list(range(5)))
    starts = np.asarray(autosparse.window_sampler(layer, index, 4)(jax.random.PRNGKey(0), 2000))
    valid = {r for r in range(len(layer) - 3) if len(set(layer[r:r + 4].tolist())) == 1
             and index[r + 3] - index[r] == 3}
    assert set(starts.tolist()) == valid  # every valid start drawn, none else (7 + 4 + 2 = 13 of them)
    counts = np.bincount(starts, minlength=len(layer))[sorted(valid)]
    assert counts.min() > 2000 / len(valid) / 2  # roughly uniform


def synthetic_rows(key, n):
    """Two 'layers' of rows with features [param, grad]; y = sigmoid(3 |param| - 1)."""
    x = jax.random.normal(key, (n, 2))
    half = n // 2
    return dict(
        x=x,
        y=jax.nn.sigmoid(3 * jnp.abs(x[:, 0]) - 1),
        layer=np.repeat(np.arange(2, dtype=np.int32), [half, n - half]),
        index=np.concatenate([np.arange(half), np.arange(n - half)]).astype(np.int64),
    )


@pytest.mark.parametrize("kind", CPU_KINDS)
def test_predictor_fits_known_function(kind):
    train, test = synthetic_rows(jax.random.PRNGKey(2), 20000), synthetic_rows(jax.random.PRNGKey(3), 4000)
    state = autosparse.train_predictor(
        train, jax.random.PRNGKey(4), kind=kind, hidden=(16, 16), steps=400, batch_size=512,
        learning_rate=1e-2, feature_set=("param", "grad"), descriptors=False, window=32,
    )
    np.testing.assert_allclose(state.mean, train["x"].mean(0), atol=1e-6)
    mse = float(jnp.mean((autosparse.predict(state, test["x"]) - test["y"]) ** 2))
    assert mse < 0.1 * float(jnp.var(test["y"])), (kind, mse, float(jnp.var(test["y"])))


def test_train_predictor_rejects_bad_config():
    data = synthetic_rows(jax.random.PRNGKey(0), 100)
    with pytest.raises(ConfigError, match="kind"):
        autosparse.train_predictor(data, jax.random.PRNGKey(0), kind="resnet", descriptors=False)
    with pytest.raises(ConfigError, match="hidden"):
        autosparse.train_predictor(data, jax.random.PRNGKey(0), hidden=(), descriptors=False)
    with pytest.raises(ConfigError, match=r"need \[R, 6\]"):
        autosparse.train_predictor(data, jax.random.PRNGKey(0))


def test_load_dataset_rejects_other_files(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, x=np.zeros((2, 2)))
    with pytest.raises(ConfigError, match="format"):
        autosparse.load_dataset(str(path))


@pytest.mark.parametrize("kind", CPU_KINDS)
def test_score_shapes_zeros_and_exact_sparsity(net, kind):
    apply_fn, params, batch = net
    grads = autosparse.init_gradients(apply_fn, params, batch)
    data = autosparse.build_dataset(params, grads, planted_survival(params), ROUNDS)
    state = autosparse.train_predictor(data, jax.random.PRNGKey(5), kind=kind, hidden=(8,), steps=20, window=16)
    scores = jax.jit(autosparse.score, static_argnums=1)(state, apply_fn, params, batch, jax.random.PRNGKey(6))
    assert jax.tree.structure(scores) == jax.tree.structure(params)
    for s, p, keep in zip(jax.tree.leaves(scores), jax.tree.leaves(params), jax.tree.leaves(masks.prunable(params))):
        assert s.shape == p.shape
        if not keep:
            np.testing.assert_array_equal(s, 0.0)
    # Prunable scores are the predictor's output on each layer's feature rows.
    feats = autosparse.features(params, grads)
    for f, s in zip(feats, masks.prunable_leaves(scores, params)):
        assert_close_across_programs(s, autosparse.predict(state, f.reshape(-1, 6)).reshape(s.shape))
    n = data["y"].shape[0]
    for sparsity in (0.5, 0.9, 0.99):
        mask = masks.from_scores(scores, params, sparsity)
        assert int(masks.count(mask, params)[0]) == round((1 - sparsity) * n)




def random_survival(key, shapes, seeds, rounds):
    """Survival counts [seeds, *shape] per layer, layers skewed differently so IRP's allocation is not uniform."""
    keys = jax.random.split(key, len(shapes))
    return [np.asarray(jnp.minimum(jax.random.geometric(k, 0.3 + 0.2 * l, (seeds, *shape)) - 1, rounds))
            for l, (k, shape) in enumerate(zip(keys, shapes))]


def test_irp_densities_are_irp_masks_with_the_crossing_round_kept_at_random():
    """At each round's density: the exact fraction of every layer with c ≥ r. In between: the mean over random
    tie-breaks of the top-k mask by survival count (Monte Carlo), and Σ d_l n_l = k always."""
    rounds, shapes = 4, [(6, 5), (5, 7), (7, 2)]
    survival = random_survival(jax.random.key(0), shapes, 2, rounds)
    allocation = autosparse.survival_allocation(survival, rounds, depth=(0, 1, 2))
    sizes = np.array([np.prod(s) for s in shapes])
    for r in range(rounds + 1):
        kept = np.array([[np.sum(c[s] >= r) for c in survival] for s in range(2)])  # [seeds, layers]
        for s in range(2):
            density = kept[s].sum() / sizes.sum()
            single = autosparse.SurvivalAllocation(allocation.kept[s:s + 1], allocation.depth)
            np.testing.assert_allclose(autosparse.irp_densities(single, density), kept[s] / sizes, atol=1e-6)
    rng = np.random.default_rng(0)
    flat = np.concatenate([c[0].ravel() for c in survival])
    layer = np.repeat(np.arange(3), sizes)
    for k in (7, 23, 40, 61):
        draws = np.zeros(3)
        for _ in range(2000):
            order = np.lexsort((rng.random(flat.size), -flat))[:k]  # highest count first, ties at random
            draws += np.bincount(layer[order], minlength=3)
        single = autosparse.SurvivalAllocation(allocation.kept[:1], allocation.depth)
        d = np.asarray(autosparse.irp_densities(single, k / sizes.sum()))
        np.testing.assert_allclose(d * sizes, draws / 2000, atol=0.2)
        np.testing.assert_allclose(np.sum(d * sizes), k, rtol=1e-5)


def test_layerwise_allocation_hits_each_layers_count_exactly(net):
    """Every allocation of a Pruner keeps round(d_l n_l) weights in layer l, d_l from masks.layer_densities of its
    per-layer densities; the global one keeps round(d n) in all; ranked within each layer by the score."""
    apply_fn, params, batch = net
    grads = autosparse.init_gradients(apply_fn, params, batch)
    data = autosparse.build_dataset(params, grads, planted_survival(params), ROUNDS)
    state = autosparse.train_predictor(data, jax.random.PRNGKey(5), hidden=(8,), steps=20)
    kernels = masks.prunable_leaves(params, params)
    survival = random_survival(jax.random.key(1), [k.shape for k in kernels], 3, ROUNDS)
    allocation = autosparse.survival_allocation(survival, ROUNDS, depth=(0, 1, 2))
    batches = jax.tree.map(lambda a: a[None], batch)
    scores = masks.prunable_leaves(autosparse.score(state, apply_fn, params, batch, None), params)
    for name in autosparse.ALLOCATIONS:
        prune = jax.jit(autosparse.prune, static_argnums=1)
        for sparsity in (0.6, 0.97):
            mask = prune(autosparse.Pruner(state, allocation, name), apply_fn, params, batches, sparsity)
            kept = [int(m.sum()) for m in masks.prunable_leaves(mask, params)]
            if name == "global":
                assert sum(kept) == round((1 - sparsity) * sum(k.size for k in kernels))
                continue
            weights = autosparse.irp_densities(allocation, 1 - sparsity) if name == "irp" else name
            targets = masks.layer_densities(params, 1 - sparsity, weights)
            assert kept == [int(masks.keep_count(float(d), k.size)) for d, k in zip(targets, kernels)]
            for m, s in zip(masks.prunable_leaves(mask, params), scores):  # the layer's top scores
                assert float(jnp.min(jnp.where(m, s, jnp.inf))) >= float(jnp.max(jnp.where(m, -jnp.inf, s)))
    irp = np.asarray(autosparse.irp_densities(allocation, 0.1))
    np.testing.assert_allclose(masks.layer_densities(params, 0.1, irp), irp, rtol=1e-5)  # already meets the total


def test_iterative_autosparse_hits_sparsity_and_transfer_allocation_follows_depth(net):
    apply_fn, params, batch = net
    grads = autosparse.init_gradients(apply_fn, params, batch)
    data = autosparse.build_dataset(params, grads, planted_survival(params), ROUNDS)
    state = autosparse.train_predictor(data, jax.random.PRNGKey(5), hidden=(8,), steps=20)
    batches = jax.tree.map(lambda a: a[None], batch)
    n = sum(k.size for k in masks.prunable_leaves(params, params))
    for iterations in (1, 3):
        mask = autosparse.prune(autosparse.Pruner(state, iterations=iterations), apply_fn, params, batches, 0.9)
        assert int(masks.count(mask, params)[0]) == round(0.1 * n)
    one_shot = autosparse.prune(autosparse.Pruner(state), apply_fn, params, batches, 0.9)
    assert all(bool(jnp.all(a == b)) for a, b in zip(jax.tree.leaves(one_shot), jax.tree.leaves(
        masks.from_scores(autosparse.score(state, apply_fn, params, batch, None), params, 0.9))))
    d = jnp.array([0.1, 0.5, 0.2])
    np.testing.assert_allclose(autosparse.transfer_allocation(d, jnp.array([0.5, 1.0, 0.0]), (1, 2, 0)), d)
    np.testing.assert_allclose(autosparse.transfer_allocation(d, jnp.array([0.0, 0.5, 1.0]), (0, 1, 2, 3, 4)),
                               [0.1, 0.3, 0.5, 0.35, 0.2])


def test_rank_objective_learns_the_order_within_each_layer():
    """objective='rank' fits the within-layer order of y (a shift per layer is invisible to it)."""
    rows = synthetic_rows(jax.random.PRNGKey(2), 8000)
    rows["y"] = rows["y"] + 5.0 * rows["layer"]  # layer offsets a pairwise loss within a layer cannot see
    test = synthetic_rows(jax.random.PRNGKey(3), 2000)
    state = autosparse.train_predictor(rows, jax.random.PRNGKey(4), hidden=(16,), steps=300, batch_size=512,
                                       learning_rate=1e-2, feature_set=("param", "grad"), descriptors=False,
                                       objective="rank")
    predicted = autosparse.predict(state, test["x"])
    for layer in (0, 1):
        keep = test["layer"] == layer
        assert float(stats.spearman(predicted[keep], test["y"][keep])) > 0.95


def test_train_set_gradients_sum_the_batch_means():
    """Σ_b ∂ mean_b CE / ∂θ over batches of 256 in order, the last partial: against init_gradients per batch."""
    kx, ky, kw = jax.random.split(jax.random.PRNGKey(1), 3)
    x, labels = jax.random.normal(kx, (600, 5)), jax.random.randint(ky, (600,), 0, 4)
    params = {"kernel": jax.random.normal(kw, (5, 4))}
    apply_fn = lambda p, x: x @ p["kernel"]  # noqa: E731
    total = autosparse.train_set_gradients(apply_fn, params, (x, labels))
    expected = sum(np.asarray(autosparse.init_gradients(apply_fn, params, (x[i:i + 256], labels[i:i + 256]))["kernel"],
                              np.float64) for i in (0, 256, 512))
    np.testing.assert_allclose(total["kernel"], expected, rtol=1e-4, atol=1e-6)


def test_prune_takes_the_train_set_gradient_when_the_predictor_was_trained_on_it(net):
    apply_fn, params, batch = net
    grads = autosparse.init_gradients(apply_fn, params, batch)
    data = autosparse.build_dataset(params, grads, planted_survival(params), ROUNDS)
    state = autosparse.train_predictor(data, jax.random.PRNGKey(5), hidden=(8,), steps=20, gradient="train_set")
    batches = jax.tree.map(lambda a: a[None, :2], batch)  # a small scoring batch: must not be used
    mask = autosparse.prune(autosparse.Pruner(state), apply_fn, params, batches, 0.7, train_data=batch)
    full = autosparse.train_set_gradients(apply_fn, params, batch)
    expected = masks.from_scores(autosparse.score(state, apply_fn, params, batch, None, full), params, 0.7)
    assert all(bool(jnp.all(a == b)) for a, b in zip(jax.tree.leaves(mask), jax.tree.leaves(expected)))
    with pytest.raises(ConfigError, match="train_set"):
        autosparse.prune(autosparse.Pruner(state), apply_fn, params, batches, 0.7)


def test_image_predictor_scores_each_weight_alone(net, monkeypatch):
    """The reference's 'image' predictor at a tiny size (4x4 images, ResNet-18 of width 2): it trains, its
    BatchNorm running statistics move, and in eval mode a row's score does not depend on the other rows (one image
    per weight), whether predicted alone, in one pass, or across predict's chunks."""
    apply_fn, params, batch = net
    grads = autosparse.init_gradients(apply_fn, params, batch)
    data = autosparse.build_dataset(params, grads, planted_survival(params), ROUNDS)
    state = autosparse.train_predictor(data, jax.random.PRNGKey(5), kind="image", hidden=(8,), steps=3,
                                       batch_size=32, image=(4, 2))
    assert state.network.image_size == 4
    assert any(float(jnp.abs(m).max()) > 0 for m in jax.tree.leaves(state.params["batch_stats"]))
    x = jnp.asarray(data["x"][:64])
    together = autosparse.predict(state, x)
    np.testing.assert_allclose(autosparse.predict(state, x[7:8]), together[7:8], rtol=1e-4, atol=1e-6)
    monkeypatch.setattr(autosparse, "PREDICT_CHUNK", 24)  # 64 rows in 3 passes, the last one padded
    np.testing.assert_allclose(autosparse.predict(state, x), together, rtol=1e-4, atol=1e-6)


def test_synflow_feature_is_the_within_layer_quantile_of_the_synflow_score(net):
    """'synflow' column = (average rank − ½) / n_l of pai.score('synflow') within each layer (brute force with
    scipy's rankdata); on a masked network a weight on no path (score 0) ranks at the bottom of its layer."""
    from scipy.stats import rankdata

    apply_fn, params, batch = net
    mask = masks.from_scores(jax.tree.map(jnp.abs, params), params, 0.8)
    masked = masks.apply(params, mask)
    synflow = autosparse.path_scores(apply_fn, masked, batch[0])
    raw = masks.prunable_leaves(pai.score("synflow", apply_fn, masked, batch, None), params)
    columns = autosparse.features(masked, None, feature_set=("synflow", "param"), descriptors=False,
                                  synflow=synflow)
    for column, s, m in zip(columns, raw, masks.prunable_leaves(mask, params)):
        s = np.asarray(s, np.float64).ravel()
        expected = (rankdata(s) - 0.5) / s.size
        assert_close_across_programs(np.asarray(column[..., 0]).ravel(), expected, rtol=1e-6)
        quantile = np.asarray(column[..., 0]).ravel()
        np.testing.assert_allclose(quantile[~np.asarray(m).ravel()], quantile.min())  # pruned: no path, bottom
    with pytest.raises(ConfigError, match="synflow=None"):
        autosparse.features(params, None, feature_set=("synflow",))
