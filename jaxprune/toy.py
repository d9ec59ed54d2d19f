"""No Free Prune's toy model (Appendix C.2): masks of a 21-parameter network on every dataset of a finite space.

A dataset is n points x_i ∈ {±1}^d with labels y_i ∈ {±1}; one (point, label) pair is a *code* c ∈ [0, 2^(d+1)):
point ``c // 2`` of :func:`points`, label ``2 (c % 2) - 1``. The network is one hidden ReLU layer,

    f(x) = W2ᵀ relu(W1ᵀ x + b1) + b2,    θ = (W1 [d, h], b1 [h], W2 [h, o], b2 [o]) flattened, P parameters,

with o = 1 (regression, d = 3, h = 4: P = 21) or o = 2 logits (classification, h = 3: P = 20). Every parameter,
biases included, is prunable. Training is population (full-batch) gradient descent on the n points,
θ ← θ − η m ⊙ ∇L(m ⊙ θ) for ``steps`` steps from m ⊙ θ₀, with L = :func:`jaxprune.pai.scoring_loss` (regression:
mean ½ (f − y)², the MSE up to the factor ½; classification: mean softmax cross-entropy of class (y + 1) / 2).
Population GD is invariant to the order of the points, so a dataset is its multiset of codes: every function here
sorts the codes first, which also makes the float arithmetic order-free, so a mask is a function of the multiset.

Masks for every count k = 0 … P − 1 of pruned parameters (row k of a [P, P] bool array; ties broken by position,
the lower index pruned first):

- ``imp``: k rounds of (train from θ₀ under the mask, prune the surviving parameter of least |θ_T|), rewinding to
  θ₀ each round: one parameter per round, so the masks are nested and row k is round k's mask.
- ``magnitude_after``: train the dense net once, prune the k parameters of least |θ_T|.
- ``snip``: prune the k least |θ₀ ⊙ ∇L(θ₀)|.
- ``grasp``: prune the k least θ₀ ⊙ H g, g = ∇L_T(θ₀) over every parameter, L_T the loss with logits divided by
  ``temperature`` (classification only, as in :mod:`jaxprune.pai`); the largest θ ⊙ Hg are kept.
- ``synflow``: iterative SynFlow (``synflow_rounds`` rounds, exponential schedule from P to P − k kept), scores
  |θ ⊙ ∂R/∂θ| with R = 1ᵀ f(1; |m ⊙ θ|). It takes no data argument: its masks are constant over datasets, so
  H(m | init) = 0 by construction.

Each method is deterministic given (D, θ₀), so I(m; D | θ₀) = H(m | θ₀): the entropy of the mask over datasets.
:func:`multisets` enumerates the whole dataset space up to order with each multiset's probability, which gives it
exactly (:func:`exact_entropy_bits`). Everything is written for one dataset and vmapped over datasets.
"""
from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune import pai

METHODS = ("imp", "magnitude_after", "snip", "grasp", "synflow")
TASKS = ("regression", "classification")


class Toy(NamedTuple):
    """The toy's sizes and training: d inputs, h hidden units, o outputs (1: regression, 2: classification)."""

    input_dim: int = 3
    width: int = 4
    num_outputs: int = 1
    learning_rate: float = 0.1
    steps: int = 100
    temperature: float = 200.0  # GraSP's, classification only
    synflow_rounds: int = 100

    @property
    def num_params(self) -> int:
        return (self.input_dim + 1) * self.width + (self.width + 1) * self.num_outputs

    @property
    def num_codes(self) -> int:
        """Distinct (point, label) pairs: 2^d points times 2 labels."""
        return 2 ** (self.input_dim + 1)


def unflatten(toy: Toy, theta: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """(W1 [d, h], b1 [h], W2 [h, o], b2 [o]) from the flat parameter vector, in that order."""
    d, h, o = toy.input_dim, toy.width, toy.num_outputs
    sizes = np.cumsum([d * h, h, h * o])
    w1, b1, w2, b2 = jnp.split(theta, sizes)
    return w1.reshape(d, h), b1, w2.reshape(h, o), b2


def apply(toy: Toy, theta: jax.Array, x: jax.Array) -> jax.Array:
    """f(x) = W2ᵀ relu(W1ᵀ x + b1) + b2 for x [n, d]: outputs [n, o]."""
    w1, b1, w2, b2 = unflatten(toy, theta)
    return jax.nn.relu(x @ w1 + b1) @ w2 + b2


def init(toy: Toy, key: jax.Array, dtype=jnp.float32) -> jax.Array:
    """PyTorch's default init, every weight and bias of a layer ~ U(−1/√fan_in, 1/√fan_in), flattened."""
    bounds = np.concatenate([np.full((toy.input_dim + 1) * toy.width, 1 / math.sqrt(toy.input_dim)),
                             np.full((toy.width + 1) * toy.num_outputs, 1 / math.sqrt(toy.width))])
    return (jax.random.uniform(key, (toy.num_params,), dtype, -1.0, 1.0) * bounds).astype(dtype)


def points(input_dim: int) -> np.ndarray:
    """Every point of {±1}^d, [2^d, d], point j's coordinate i = +1 iff bit i of j is set."""
    bits = (np.arange(2**input_dim)[:, None] >> np.arange(input_dim)) & 1
    return 2.0 * bits - 1.0


def dataset(toy: Toy, codes: jax.Array, dtype=jnp.float32) -> tuple[jax.Array, jax.Array]:
    """(x [n, d], y [n]) of the sorted ``codes``: y float ±1 (regression) or class index (classification)."""
    codes = jnp.sort(codes)
    x = jnp.asarray(points(toy.input_dim), dtype)[codes // 2]
    label = codes % 2
    return x, (label if toy.num_outputs > 1 else (2 * label - 1).astype(dtype))


def loss(toy: Toy, theta: jax.Array, data, temperature: float = 1.0) -> jax.Array:
    """The training loss :func:`jaxprune.pai.scoring_loss` (regression: mean ½ (f − y)²; else cross-entropy)."""
    return pai.scoring_loss(lambda t, x: apply(toy, t, x), theta, data, temperature)


def train(toy: Toy, theta0: jax.Array, mask: jax.Array, data) -> jax.Array:
    """``toy.steps`` steps of population GD under ``mask`` from m ⊙ θ₀: θ ← θ − η m ⊙ ∇L(θ)."""
    def step(theta, _):
        return theta - toy.learning_rate * mask * jax.grad(lambda t: loss(toy, t, data))(theta), None

    return jax.lax.scan(step, jnp.where(mask, theta0, 0.0), None, length=toy.steps)[0]


def prune_lowest(scores: jax.Array, k) -> jax.Array:
    """Bool mask keeping all but the k lowest ``scores`` (−inf first; ties: the lower index is pruned first)."""
    rank = jnp.zeros(scores.shape[0], jnp.int32).at[jnp.argsort(scores, stable=True)].set(
        jnp.arange(scores.shape[0], dtype=jnp.int32))
    return rank >= k


def by_count(scores: jax.Array) -> jax.Array:
    """[P, P] bool: row k prunes the k lowest scores (one-shot methods)."""
    return jax.vmap(lambda k: prune_lowest(scores, k))(jnp.arange(scores.shape[0]))


def imp(toy: Toy, theta0: jax.Array, data) -> tuple[jax.Array, jax.Array]:
    """(IMP's masks [P, P], one parameter pruned per round with rewinding to θ₀; the dense net's trained θ_T)."""
    def one_round(mask, k):
        trained = train(toy, theta0, mask, data)
        return prune_lowest(jnp.where(mask, jnp.abs(trained), -jnp.inf), k + 1), (mask, trained)

    dense = jnp.ones(toy.num_params, bool)
    _, (rows, trained) = jax.lax.scan(one_round, dense, jnp.arange(toy.num_params))
    return rows, trained[0]


def snip_scores(toy: Toy, theta0: jax.Array, data) -> jax.Array:
    """|θ₀ ⊙ ∇L(θ₀)|."""
    return jnp.abs(theta0 * jax.grad(lambda t: loss(toy, t, data))(theta0))


def grasp_scores(toy: Toy, theta0: jax.Array, data) -> jax.Array:
    """θ₀ ⊙ H g with g = ∇L_T(θ₀) (stopped) and H the Hessian of L_T, T = ``toy.temperature`` (classification)."""
    temperature = toy.temperature if toy.num_outputs > 1 else 1.0
    grad = jax.grad(lambda t: loss(toy, t, data, temperature))
    g = grad(theta0)
    return theta0 * jax.jvp(grad, (theta0,), (g,))[1]


def synflow(toy: Toy, theta0: jax.Array) -> jax.Array:
    """Iterative SynFlow's masks [P, P] (no data): for target K = P − k kept, round r = 1..R keeps the
    round(P (K/P)^(r/R)) largest |θ ⊙ ∂R/∂θ| among the survivors, R = 1ᵀ f(1; |m ⊙ θ₀|)."""
    p, rounds = toy.num_params, toy.synflow_rounds
    ones = jnp.ones((1, toy.input_dim), theta0.dtype)

    def scores(mask):
        flow = jnp.abs(jnp.where(mask, theta0, 0.0))
        return jnp.abs(flow * jax.grad(lambda t: jnp.sum(apply(toy, t, ones)))(flow))

    def for_count(k):
        def one_round(mask, r):
            kept = jnp.round(p * ((p - k) / p) ** (r / rounds)).astype(jnp.int32)
            return mask & prune_lowest(jnp.where(mask, scores(mask), -jnp.inf), p - kept), None

        return jax.lax.scan(one_round, jnp.ones(p, bool), jnp.arange(1, rounds + 1))[0]

    return jax.vmap(for_count)(jnp.arange(p))


def all_masks(toy: Toy, theta0: jax.Array, codes: jax.Array) -> dict[str, jax.Array]:
    """Every method's masks [P, P] on the dataset of ``codes`` [n] (:data:`METHODS`)."""
    data = dataset(toy, codes, theta0.dtype)
    imp_rows, trained = imp(toy, theta0, data)
    return {"imp": imp_rows, "magnitude_after": by_count(jnp.abs(trained)),
            "snip": by_count(snip_scores(toy, theta0, data)), "grasp": by_count(grasp_scores(toy, theta0, data)),
            "synflow": synflow(toy, theta0)}


def pattern_ids(masks: np.ndarray) -> np.ndarray:
    """One integer per mask, Σ_i m_i 2^i, over the last axis [..., P] (P <= 62)."""
    return (np.asarray(masks, np.int64) << np.arange(masks.shape[-1], dtype=np.int64)).sum(-1)


def num_multisets(num_codes: int, n: int) -> int:
    """C(num_codes + n − 1, n): datasets of n points up to order."""
    return math.comb(num_codes + n - 1, n)


def multisets(num_codes: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Every multiset of n codes (sorted rows, [M, n]) and its probability under n i.i.d. uniform draws,
    n! / Π_c (count_c!) / num_codes^n (the probabilities sum to 1)."""
    rows = np.array(list(itertools.combinations_with_replacement(range(num_codes), n)), np.int32)
    counts = np.stack([(rows == c).sum(1) for c in range(num_codes)], axis=1)
    log_orderings = math.lgamma(n + 1) - np.sum([[math.lgamma(c + 1) for c in row] for row in counts], axis=1)
    return rows, np.exp(log_orderings - n * math.log(num_codes))


def exact_entropy_bits(ids: np.ndarray, probabilities: np.ndarray) -> float:
    """H(m) = −Σ_m p(m) log2 p(m), p(m) = Σ of the probabilities of the datasets whose mask id is m."""
    _, inverse = np.unique(ids, return_inverse=True)
    p = np.bincount(inverse.ravel(), weights=probabilities)
    p = p[p > 0]
    return max(float(-np.sum(p * np.log2(p))), 0.0) + 0.0  # + 0.0: no -0.0
