"""iterative SNIP, FORCE, ProsPr and NPB against their references, written here by hand in NumPy float64: the
reference loops of github.com/naver/force (``iterative_pruning``), ProsPr's meta-gradient by finite differences,
NPB's layer problem by brute force over every mask. Effective-sparsity targets: reached, or refused."""
import itertools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close_across_programs

from jaxprune import connectivity, masks, npb, pai
from jaxprune.errors import ConfigError
from jaxprune.experiments import masking


def numpy_mlp(seed=0, sizes=(4, 5, 3), examples=16):
    """Float64 weights [(W, b)] of a ReLU MLP, a batch (x [examples, in], y [examples])."""
    rng = np.random.default_rng(seed)
    layers = [(rng.normal(size=(a, b)) / np.sqrt(a), rng.normal(size=b) * 0.1) for a, b in zip(sizes, sizes[1:])]
    return layers, rng.normal(size=(examples, sizes[0])), rng.integers(0, sizes[-1], examples)


def loss_and_grads(layers, x, y):
    """Mean softmax cross-entropy of the ReLU MLP and its gradients [(dW, db)], by hand (backpropagation)."""
    acts = [x]
    for i, (w, b) in enumerate(layers):
        z = acts[-1] @ w + b
        acts.append(np.maximum(z, 0) if i < len(layers) - 1 else z)
    z = acts[-1] - acts[-1].max(1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    loss = -np.mean(np.log(p[np.arange(len(y)), y]))
    delta = (p - np.eye(p.shape[1])[y]) / len(y)
    grads = []
    for i in reversed(range(len(layers))):
        grads.append((acts[i].T @ delta, delta.sum(0)))
        delta = (delta @ layers[i][0].T) * (acts[i] > 0)
    return loss, grads[::-1]


def as_jax(layers, dtype=jnp.float32):
    return {f"Dense_{i}": {"kernel": jnp.asarray(w, dtype), "bias": jnp.asarray(b, dtype)}
            for i, (w, b) in enumerate(layers)}


def apply_fn(params, x):
    for i in range(len(params)):
        x = x @ params[f"Dense_{i}"]["kernel"] + params[f"Dense_{i}"]["bias"]
        x = jax.nn.relu(x) if i < len(params) - 1 else x
    return x


def reference_iterative(layers, x, y, sparsity, steps, force):
    """naver/force ``iterative_pruning`` (exponential mode) in float64: FORCE (prune_method 3) scores
    |θ_0 ⊙ ∇L(θ_0 ⊙ m)| for every weight, the network rebuilt from the dense weights each step; iterative SNIP
    (prune_method 1) scores |w ⊙ ∇L(w)|, w = θ_0 ⊙ m, pruned weights at the minimum saliency. Kept: saliency ≥
    the k-th largest. One convention changed: k = round(d·n) (ours) where the reference floors, int(d·n)."""
    kernels = [w for w, _ in layers]
    n = sum(w.size for w in kernels)
    mask = [np.ones_like(w, bool) for w in kernels]
    for step in range(steps):
        density = math.exp(-(step + 1) * -math.log(1 - sparsity) / steps)
        current = [(w * m, b) for (w, b), m in zip(layers, mask)]
        grads = [g for g, _ in loss_and_grads(current, x, y)[1]]
        if force:
            saliency = [np.abs(w * g) for w, g in zip(kernels, grads)]
        else:
            saliency = [np.abs(w * g) for (w, _), g in zip(current, grads)]
            low = min(s.min() for s in saliency)
            saliency = [np.where(m, s, low) for s, m in zip(saliency, mask)]
        flat = np.sort(np.concatenate([s.ravel() for s in saliency]))
        k = round(density * n) if step < steps - 1 else round((1 - sparsity) * n)
        assert flat[-k] > flat[-k - 1] * (1 + 1e-4), "a near-tie at the threshold: pick another seed"
        mask = [s >= flat[-k] for s in saliency]
    return mask


@pytest.mark.parametrize("method, force", [("iterative_snip", False), ("force", True)])
def test_iterative_snip_and_force_match_the_reference_loop(method, force):
    layers, x, y = numpy_mlp(seed=3, sizes=(6, 8, 4), examples=32)
    expected = reference_iterative(layers, x, y, sparsity=0.9, steps=4, force=force)
    batches = (jnp.asarray(x[None], jnp.float32), jnp.asarray(y[None]))
    got = jax.jit(lambda p: pai.prune(method, apply_fn, p, batches, jax.random.key(0), 0.9, rounds=4))(as_jax(layers))
    for i, m in enumerate(expected):
        np.testing.assert_array_equal(np.asarray(got[f"Dense_{i}"]["kernel"]), m)
    if force:  # FORCE revives: its last mask is not a subset of iterative SNIP's, so the two rules differ here
        snip = reference_iterative(layers, x, y, sparsity=0.9, steps=4, force=False)
        assert any(np.any(a != b) for a, b in zip(expected, snip))


def prospr_meta_loss(layers, c, x, y, steps, lr, momentum):
    """L(θ_K) after K SGD steps (momentum buffer v_1 = g_0, v = μ v + g) from θ_0 = (c ⊙ W, b), float64."""
    theta = [(w * ci, b) for (w, b), ci in zip(layers, c)]
    velocity = None
    for _ in range(steps):
        grads = loss_and_grads(theta, x, y)[1]
        flat = [g for pair in grads for g in pair]
        velocity = flat if velocity is None else [momentum * v + g for v, g in zip(velocity, flat)]
        step = iter(velocity)
        theta = [(w - lr * next(step), b - lr * next(step)) for w, b in theta]
    return loss_and_grads(theta, x, y)[0]


@pytest.mark.parametrize("steps, lr, momentum", [(3, 0.1, 0.0), (2, 0.5, 0.9)])
def test_prospr_is_the_meta_gradient_through_the_inner_sgd_steps(steps, lr, momentum):
    layers, x, y = numpy_mlp(seed=1, sizes=(3, 4, 3), examples=8)
    ones = [np.ones_like(w) for w, _ in layers]
    expected = []
    for l, w in enumerate(ones):  # central differences in every mask entry
        grad = np.zeros_like(w)
        for idx in np.ndindex(w.shape):
            plus, minus = [c.copy() for c in ones], [c.copy() for c in ones]
            plus[l][idx] += 1e-6
            minus[l][idx] -= 1e-6
            grad[idx] = (prospr_meta_loss(layers, plus, x, y, steps, lr, momentum)
                         - prospr_meta_loss(layers, minus, x, y, steps, lr, momentum)) / 2e-6
        expected.append(np.abs(grad))
    options = pai.ScoringOptions(inner_steps=steps, inner_lr=lr, inner_momentum=momentum)
    with jax.enable_x64(True):
        score = jax.jit(lambda p, b: pai.score("prospr", apply_fn, p, b, jax.random.key(0), options=options))
        got = jax.tree.map(np.asarray, score(as_jax(layers, jnp.float64), (jnp.asarray(x), jnp.asarray(y))))
    for l, e in enumerate(expected):
        assert_close_across_programs(got[f"Dense_{l}"]["kernel"], e, rtol=1e-6)
        assert np.all(got[f"Dense_{l}"]["bias"] == 0)
    plain_snip = np.abs(layers[0][0] * loss_and_grads(layers, x, y)[1][0][0])  # K steps matter: not SNIP's score
    assert not np.allclose(expected[0] / expected[0].max(), plain_snip / plain_snip.max(), rtol=0.05)


def brute_force(p_in, c_out, budget, alpha):
    """max of npb.objective over every 0/1 [C_in, C_out] kernel with at most ``budget`` ones."""
    c_in = len(p_in)
    best = -np.inf
    for bits in itertools.product((0, 1), repeat=c_in * c_out):
        if sum(bits) <= budget:
            best = max(best, npb.objective(np.reshape(bits, (c_in, c_out)), p_in, budget, alpha))
    return best


@pytest.mark.parametrize("p_in, c_out, budget, alpha", [
    ([1.0, 1.0, 1.0], 4, 5, 0.99),
    ([1.0, 3.0, 7.0, 2.0], 3, 4, 0.7),
    ([5.0, 1.0, 2.0], 3, 2, 0.3),  # fewer weights than output units: the normalizer's whole-array case
    ([2.0, 9.0, 4.0, 1.0], 3, 6, 0.01),  # paths dominate
])
def test_npb_layer_optimum_equals_brute_force(p_in, c_out, budget, alpha):
    p_in = np.asarray(p_in)
    mask = npb.solve_layer(p_in, c_out, budget, alpha)
    assert mask.shape == (len(p_in), c_out) and mask.sum() <= budget and set(np.unique(mask)) <= {0, 1}
    assert npb.objective(mask, p_in, budget, alpha) == pytest.approx(brute_force(p_in, c_out, budget, alpha),
                                                                     rel=1e-9)


def test_npb_path_counts_propagate_through_the_chosen_masks_and_chunks_are_the_reference_sizes(monkeypatch):
    shapes, densities = [(3, 4), (4, 2)], np.array([0.5, 0.5])
    first, second = npb.masks_for(shapes, densities, alpha=0.5)
    p_hidden = np.ones(3) @ first + 1.0  # all-ones input, biases 1, ReLU of non-negative values
    np.testing.assert_array_equal(second, npb.solve_kernel(p_hidden, 2, 0.5, 0.5))
    assert first.sum() <= math.ceil(0.5 * 12)
    monkeypatch.setattr(npb, "CHUNK_ABOVE", 30)  # the reference's 5120, scaled down: 3 x 12 = 36 weights
    p_in = np.array([1.0, 4.0, 2.0])
    wide = npb.solve_kernel(p_in, 12, 0.3, 0.7)  # chunks of 10 and 2 output units, each ⌈0.3 · 3 · width⌉ weights
    np.testing.assert_array_equal(wide[:, :10], npb.solve_layer(p_in, 10, 9, 0.7))
    np.testing.assert_array_equal(wide[:, 10:], npb.solve_layer(p_in, 2, 2, 0.7))
    assert not np.array_equal(wide, npb.solve_layer(p_in, 12, 11, 0.7))  # unchunked, it is another mask


def test_npb_scorer_prunes_to_the_solved_mask_at_erk_densities():
    layers, x, y = numpy_mlp(seed=0, sizes=(4, 6, 3))
    params = as_jax(layers)
    batches = (jnp.asarray(x[None], jnp.float32), jnp.asarray(y[None]))
    sparsity = 0.5
    densities = np.asarray(masks.layer_densities(params, 1 - sparsity, "erk"))
    expected = npb.masks_for([(4, 6), (6, 3)], densities, 0.99)
    got = pai.prune("npb", apply_fn, params, batches, jax.random.key(0), sparsity)
    chosen = np.concatenate([m.ravel() for m in expected]).astype(bool)
    magnitude = np.concatenate([np.abs(w).ravel() for w, _ in layers])
    k = round((1 - sparsity) * chosen.size)
    assert chosen.sum() == k + 1  # NPB rounds each layer's budget up: one weight more than the global count
    drop = np.flatnonzero(chosen)[np.argmin(magnitude[chosen])]  # which leaves: NPB's smallest |θ|
    chosen[drop] = False
    flat = np.concatenate([np.asarray(got[f"Dense_{i}"]["kernel"]).ravel() for i in range(2)])
    np.testing.assert_array_equal(flat, chosen)


def test_npb_refuses_a_network_that_is_not_a_dense_chain():
    params = {"Conv_0": {"kernel": jnp.ones((3, 3, 1, 2))}, "Dense_0": {"kernel": jnp.ones((8, 2))}}
    with pytest.raises(ConfigError, match="npb: implemented for a chain of Dense layers"):
        pai.score("npb", lambda p, x: x, params, (jnp.ones((2, 4, 4, 1)), jnp.zeros(2, int)), jax.random.key(0))


class FlaxMLP(nn.Module):
    """Dense 6 → 8 → 4 with ReLU: a Flax model, as :mod:`jaxprune.connectivity` needs."""

    @nn.compact
    def __call__(self, x):
        hidden = nn.relu(nn.Dense(8)(x))
        return nn.Dense(4)(hidden)


def layer_order_scorer(apply_fn, params, batches, key, options):
    """Every first-layer weight before any second-layer one; in the second layer, output unit 0 first, one hidden
    unit after another: each second-layer weight kept connects a new hidden unit and its 6 inputs at once."""
    first = params["Dense_0"]["kernel"]
    order = 1.0 + (jnp.arange(4) == 0)[None, :] - 0.01 * jnp.arange(8)[:, None]
    return {"Dense_0": {"kernel": jnp.full_like(first, 3.0), "bias": params["Dense_0"]["bias"]},
            "Dense_1": {"kernel": order, "bias": params["Dense_1"]["bias"]}}


def effective_run(method, sparsity):
    """(mask, kept, effective) of masking.effective_search for one seed of FlaxMLP, and its reached() check."""
    model = FlaxMLP()
    params = model.init(jax.random.key(0), jnp.ones((1, 6)))["params"]
    apply_fn = lambda p, x: model.apply({"params": p}, x)
    layers, x, y = numpy_mlp(seed=0, sizes=(6, 8, 4))
    batches = (jnp.asarray(x[None], jnp.float32), jnp.asarray(y[None]))
    count = lambda m: masks.count(connectivity.effective_mask(apply_fn, params, m, (6,)), params)[0]
    mask_at = lambda s: pai.prune(method, apply_fn, params, batches, jax.random.key(0), s)
    found = jax.jit(lambda s: masking.effective_search(mask_at, count, 80, s))(jnp.float32(sparsity))
    return found, masking.reached(method, sparsity, jax.tree.map(lambda a: a[None], found))


@pytest.mark.parametrize("method, sparsity", [("snip", 0.7)])
def test_effective_target_is_reached_within_one_weight_per_layer(method, sparsity):
    """Settings where the mask at the nominal target leaves weights off every path: the search keeps more."""
    (mask, kept, effective), _ = effective_run(method, sparsity)
    target = round((1 - sparsity) * 80)
    assert 0 <= int(effective) - target <= 2 and int(kept) > target
    assert int(masks.count(mask, mask)[0]) == int(kept)


def test_an_effective_target_a_method_jumps_over_is_a_config_error(monkeypatch):
    """Kept counts 48 + j (j ≤ 8) leave 7j weights on a path (the j hidden units and their 6 inputs): 16 effective
    weights are asked, 14 and 21 are reachable, and 21 − 16 is more than one per layer."""
    monkeypatch.setattr(pai, "_SCORERS", dict(pai._SCORERS))
    pai.register("layer_order", layer_order_scorer)
    with pytest.raises(ConfigError, match=r"layer_order cannot reach effective sparsity 0.8 for seed 0: 16 "
                                          r"effective weights asked, but its masks jump from fewer to 21"):
        effective_run("layer_order", 0.8)


def test_a_config_error_inside_a_host_callback_reaches_the_cli_as_its_own_line():
    """NPB's solver runs in a pure_callback; a ConfigError it raises arrives wrapped in a JaxRuntimeError."""
    from jaxprune import main

    def failing(x):
        raise ConfigError("npb: HiGHS found no mask for a 3x4 layer with 5 weights (infeasible)")

    run = jax.jit(lambda x: jax.pure_callback(failing, jax.ShapeDtypeStruct((), jnp.float32), x))
    with pytest.raises(jax.errors.JaxRuntimeError) as caught:
        run(1.0).block_until_ready()
    assert main.callback_config_error(caught.value) == (
        "npb: HiGHS found no mask for a 3x4 layer with 5 weights (infeasible)")
    assert main.callback_config_error(RuntimeError("XlaRuntimeError: INTERNAL: out of memory")) is None
