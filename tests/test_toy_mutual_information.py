"""No Free Prune's Figure 4: the toy's masks against numpy, the exact enumeration against brute force, the entropy
estimators on distributions of known entropy, a tiny run and its bad input."""
import itertools
import math

import jax
import numpy as np
import pytest

from configs import nfp_fig4
from jaxprune import mi, toy
from jaxprune.errors import ConfigError
from jaxprune.experiments import toy_mutual_information as tmi

# ------------------------------------------------------------------------------------------------------------
# A hand-written numpy version of the toy, in float64.


def np_split(t, d, h, o):
    sizes = np.cumsum([d * h, h, h * o])
    w1, b1, w2, b2 = np.split(t, sizes)
    return w1.reshape(d, h), b1, w2.reshape(h, o), b2


def np_grad(t, x, y, sizes, temperature=1.0):
    """∇ of mean ½ (f − y)² (o = 1) or mean cross-entropy of softmax(f / T) (o = 2), by backpropagation."""
    w1, b1, w2, b2 = np_split(t, *sizes)
    a = x @ w1 + b1
    r = np.maximum(a, 0.0)
    out = r @ w2 + b2
    n = x.shape[0]
    if sizes[2] == 1:
        dout = (out[:, 0] - y)[:, None] / n
    else:
        z = out / temperature
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        dout = (p - np.eye(2)[y]) / (n * temperature)
    da = (dout @ w2.T) * (a > 0)
    return np.concatenate([(x.T @ da).ravel(), da.sum(0), (r.T @ dout).ravel(), dout.sum(0)])


def np_prune_lowest(scores, k):
    mask = np.ones(scores.shape[0], bool)
    mask[np.argsort(scores, kind="stable")[:k]] = False
    return mask


def np_train(t0, mask, x, y, sizes, lr, steps):
    t = np.where(mask, t0, 0.0)
    for _ in range(steps):
        t = t - lr * mask * np_grad(t, x, y, sizes)
    return t


def np_masks(t0, codes, sizes, lr, steps, temperature, synflow_rounds):
    d, h, o = sizes
    p = t0.shape[0]
    codes = np.sort(codes)
    x = toy.points(d)[codes // 2]
    y = codes % 2 if o == 2 else 2.0 * (codes % 2) - 1
    imp, mask, trained = [], np.ones(p, bool), None
    for k in range(p):
        imp.append(mask.copy())
        t = np_train(t0, mask, x, y, sizes, lr, steps)
        trained = t if k == 0 else trained
        mask = np_prune_lowest(np.where(mask, np.abs(t), -np.inf), k + 1)
    g = np_grad(t0, x, y, sizes)
    t_grasp = temperature if o == 2 else 1.0
    g_t, eps = np_grad(t0, x, y, sizes, t_grasp), 1e-6
    hg = (np_grad(t0 + eps * g_t, x, y, sizes, t_grasp) - np_grad(t0 - eps * g_t, x, y, sizes, t_grasp)) / (2 * eps)
    one_shot = lambda s: np.stack([np_prune_lowest(s, k) for k in range(p)])  # noqa: E731
    return {"imp": np.stack(imp), "magnitude_after": one_shot(np.abs(trained)), "snip": one_shot(np.abs(t0 * g)),
            "grasp": one_shot(t0 * hg), "synflow": np_synflow(t0, sizes, synflow_rounds)}


def np_synflow(t0, sizes, rounds):
    """R = 1ᵀ f(1; |θ|) = Σ_o (|W2|ᵀ h + |b2|)_o with h = |W1|ᵀ 1 + |b1| (non-negative, so ReLU is the identity)."""
    p = t0.shape[0]
    rows = []
    for k in range(p):
        mask = np.ones(p, bool)
        for r in range(1, rounds + 1):
            w1, b1, w2, b2 = np_split(np.abs(np.where(mask, t0, 0.0)), *sizes)
            hidden = w1.sum(0) + b1
            d_hidden = w2.sum(1)
            grad = np.concatenate([np.broadcast_to(d_hidden, w1.shape).ravel(), d_hidden,
                                   np.repeat(hidden, sizes[2]), np.ones(sizes[2])])
            scores = np.abs(np.concatenate([w1.ravel(), b1, w2.ravel(), b2]) * grad)
            kept = int(np.round(p * ((p - k) / p) ** (r / rounds)))
            mask &= np_prune_lowest(np.where(mask, scores, -np.inf), p - kept)
        rows.append(mask)
    return np.stack(rows)


@pytest.mark.parametrize("task", toy.TASKS)
def test_the_toys_masks_equal_a_numpy_computation(task):
    config = nfp_fig4.get_config(task if task == "classification" else "")
    sizes = tmi.toy_of(config)._replace(steps=20, synflow_rounds=10)
    assert sizes.num_params == (21 if task == "regression" else 20)
    codes = np.asarray(jax.random.randint(jax.random.key(3), (2, 6), 0, sizes.num_codes))
    with jax.enable_x64(True):
        theta0 = toy.init(sizes, jax.random.key(0), np.float64)
        masks = jax.jit(jax.vmap(lambda c: toy.all_masks(sizes, theta0, c)))(codes)
        for i, c in enumerate(codes):
            expected = np_masks(np.asarray(theta0), c, (sizes.input_dim, sizes.width, sizes.num_outputs),
                                sizes.learning_rate, sizes.steps, sizes.temperature, sizes.synflow_rounds)
            for method in toy.METHODS:
                np.testing.assert_array_equal(np.asarray(masks[method][i]), expected[method], err_msg=method)
    # The methods differ from each other on these datasets (a test that all methods agree could not tell them apart).
    assert len({toy.pattern_ids(np.asarray(masks[m][0])).tobytes() for m in toy.METHODS}) == len(toy.METHODS)


def test_the_exact_enumeration_equals_brute_force_on_a_smaller_toy():
    sizes = toy.Toy(input_dim=2, width=2, steps=20, synflow_rounds=5)
    n = 3
    theta0 = toy.init(sizes, jax.random.key(1))
    ordered = np.array(list(itertools.product(range(sizes.num_codes), repeat=n)), np.int32)  # 8^3 ordered datasets
    rows, probabilities = toy.multisets(sizes.num_codes, n)
    assert len(rows) == toy.num_multisets(sizes.num_codes, n) == math.comb(10, 3)
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-12)
    masks = jax.jit(jax.vmap(lambda c: toy.all_masks(sizes, theta0, c)))(np.concatenate([ordered, rows]))
    by_order = {m: v[:len(ordered)] for m, v in masks.items()}
    by_multiset = {m: v[len(ordered):] for m, v in masks.items()}
    uniform = np.full(len(ordered), 1.0 / len(ordered))
    nonzero = 0
    for method in toy.METHODS:
        brute, multi = toy.pattern_ids(np.asarray(by_order[method])), toy.pattern_ids(np.asarray(by_multiset[method]))
        for k in range(sizes.num_params):
            exact = toy.exact_entropy_bits(multi[:, k], probabilities)
            assert exact == pytest.approx(toy.exact_entropy_bits(brute[:, k], uniform), abs=1e-9)
            nonzero += exact > 0.1
    assert nonzero > 10  # the masks do depend on the data here


def test_entropy_estimators_on_distributions_of_known_entropy():
    # Exact frequencies: the plug-in entropy is the entropy, e.g. (1/2, 1/4, 1/8, 1/8) -> 1.75 bits.
    plugin, miller_madow = mi.entropy_bits(np.array([0, 0, 0, 0, 1, 1, 2, 3]))
    assert plugin == pytest.approx(1.75, abs=1e-12)
    assert miller_madow == pytest.approx(1.75 + 3 / (2 * 8 * math.log(2)), abs=1e-12)
    assert mi.entropy_bits(np.zeros(10, int)) == (0.0, 0.0)
    # Uniform over 32 values, 60 samples: the plug-in is biased low by ~(K−1)/(2N ln 2) ≈ 0.37 bits, which
    # Miller–Madow removes to first order.
    rng = np.random.default_rng(0)
    estimates = np.array([mi.entropy_bits(rng.integers(0, 32, 60)) for _ in range(400)])
    bias = estimates.mean(0) - 5.0
    assert bias[0] < -0.25
    assert abs(bias[1]) < abs(bias[0]) / 3


def tiny_config(**overrides):
    c = nfp_fig4.get_config()
    c.update(dict(input_dim=2, widths=(2,), num_examples=3, train_steps=10, synflow_rounds=5, num_datasets=2000,
                  sample_sizes=(100, 2000)) | overrides)
    return c


def test_a_tiny_run_reports_exact_and_sampled_bits(run_experiment):
    _, _, results = run_experiment(tmi, tiny_config())
    assert results["mi_source"] == "exact enumeration" and results["num_exact_datasets"] == 120
    assert set(results["mi_bits"]) == set(toy.METHODS)
    assert all(len(b) == 9 and b[0] == 0.0 for b in results["mi_bits"].values())  # nothing pruned: one mask
    assert results["mi_bits"]["synflow"] == [0.0] * 9
    # 2000 samples of a 120-dataset space: Miller–Madow within 0.15 bits of the exact value at every count.
    assert max(results["sampled_error"][2000]["miller_madow"].values()) < 0.15
    error = {n: max(results["sampled_error"][n]["plugin"].values()) for n in (100, 2000)}
    assert error[100] > 0.1 and error[100] > 2 * error[2000]  # the plug-in converges as N grows
    # The sampled masks looked up in the enumeration equal those the vmapped program computes on the samples.
    _, _, direct = run_experiment(tmi, tiny_config(exact=False, num_datasets=300, sample_sizes=(300,)))
    _, _, looked_up = run_experiment(tmi, tiny_config(num_datasets=300, sample_sizes=(300,)))
    assert direct["sampled"] == looked_up["sampled"] and direct["mi_source"] == "miller_madow at 300 samples"


@pytest.mark.parametrize("overrides, message", [
    (dict(num_examples=30), "max_exact_datasets"),  # C(8 + 30 − 1, 30) ≈ 1.0e7 datasets up to order
    (dict(sample_sizes=()), "sample_sizes"),
    (dict(sample_sizes=(5000,)), "sample_sizes"),
    (dict(widths=(4, 4)), "one hidden layer"),
    (dict(methods=("imp", "random")), "methods"),
])
def test_bad_input_is_one_config_error(overrides, message):
    with pytest.raises(ConfigError, match=message):
        tmi.validate(tiny_config(**overrides))
