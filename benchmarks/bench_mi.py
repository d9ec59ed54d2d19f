"""Wall times of the MI estimators on synthetic mask ensembles with known information.

``mi.estimate``: 4000 masks x 2000 weights (K = 4 dataset draws, 1000 masks each); 16 weights copied from a
per-draw prototype through a binary symmetric channel (flip prob 0.1), the other 1984 independent fair coins, so
the classifier regime is used.

``mi.noise_bits_bound``: 512 masks x 2000 weights x 256 fair noise bits. Bit j < 128 is copied into one weight
through a BSC with flip prob FLIPS[j % 4] (I = 1 - h(p)); bit j >= 128 into SPREAD weights, each through its own
BSC(SPREAD_FLIP) (I by enumeration of the number of agreeing copies); the other weights are fair coins. The
truth I(M; Z) = Σ_j I(z_j; its weights) is printed beside the bound. Timed: the batched implementation on all
256 bits and on the first 48, and the previous one (one multinomial fit per bit, vmapped) on the first 48.

Every time includes compilation and the permutation null. Run: ``python benchmarks/bench_mi.py``.
"""
import functools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from jaxprune import mi

NUM_MASKS, NUM_WEIGHTS, NUM_DRAWS, NUM_INFORMATIVE, FLIP = 4000, 2000, 4, 16, 0.1
NOISE_MASKS, NOISE_BITS, FLIPS, SPREAD, SPREAD_FLIP = 512, 256, (0.05, 0.1, 0.2, 0.3), 4, 0.3


def synthetic_ensemble(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    labels = np.repeat(np.arange(NUM_DRAWS), NUM_MASKS // NUM_DRAWS)
    prototypes = rng.random((NUM_DRAWS, NUM_INFORMATIVE)) < 0.5
    informative = prototypes[labels] ^ (rng.random((NUM_MASKS, NUM_INFORMATIVE)) < FLIP)
    noise = rng.random((NUM_MASKS, NUM_WEIGHTS - NUM_INFORMATIVE)) < 0.5
    return np.concatenate([informative, noise], axis=1), labels


def bits_of_copies(num_copies: int, flip: float) -> float:
    """I(z; M) in bits for a fair bit z copied into ``num_copies`` weights through independent BSC(flip)s:
    the number S of copies equal to z is sufficient, S ~ Bin(num_copies, 1 - flip) given z."""
    s = np.arange(num_copies + 1)
    given = np.stack([stats.binom.pmf(s, num_copies, 1 - flip), stats.binom.pmf(s, num_copies, flip)])
    return float(np.sum(0.5 * given * np.log2(given / given.mean(0))))


def noise_ensemble(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(masks [N, W], noise bits [N, B], truth per bit [B]) of the module docstring."""
    half = NOISE_BITS // 2
    noise = rng.random((NOISE_MASKS, NOISE_BITS)) < 0.5
    flips = np.array(FLIPS * (half // len(FLIPS)))
    single = noise[:, :half] ^ (rng.random((NOISE_MASKS, half)) < flips)
    spread = np.repeat(noise[:, half:], SPREAD, axis=1) ^ (rng.random((NOISE_MASKS, half * SPREAD)) < SPREAD_FLIP)
    coins = rng.random((NOISE_MASKS, NUM_WEIGHTS - half * (1 + SPREAD))) < 0.5
    truth = np.concatenate([[bits_of_copies(1, f) for f in flips], [bits_of_copies(SPREAD, SPREAD_FLIP)] * half])
    return np.concatenate([single, spread, coins], axis=1), noise, truth


def timed(f, *args, **kwargs):
    start = time.perf_counter()
    result = f(*args, **kwargs)
    return time.perf_counter() - start, result


def describe(result: mi.MIResult) -> str:
    return (f"{result.bits:.2f} bits in [{result.lower:.2f}, {result.upper:.2f}], "
            f"null {np.round(result.null_bits, 2).tolist()}")


def previous_noise_bits_bound(masks, noise, num_folds=5, num_permutations=4) -> mi.MIResult:
    """The implementation before the batched one, rebuilt from the library's pieces: one 2-class multinomial
    :func:`jaxprune.mi.classifier_gain` per bit (its own penalty choice), vmapped over bits and permutations."""
    fold_key, perm_key = jax.random.split(jax.random.key(0))
    folds = mi._stratified_folds(np.zeros(masks.shape[0], np.int32), num_folds, fold_key)
    bits = jnp.asarray(noise, jnp.int32)
    sets = jnp.concatenate([bits[None], bits[mi._permutations(perm_key, num_permutations, bits.shape[0])]])
    gain = functools.partial(mi.classifier_gain, mi.standardize(jnp.asarray(masks)), fold_of=folds,
                             penalties=jnp.asarray(mi.DEFAULT_PENALTIES), num_classes=2, num_folds=num_folds,
                             num_steps=100, learning_rate=0.1)
    gains = jax.jit(jax.vmap(jax.vmap(gain, in_axes=1)))(sets).sum(1)  # [1 + P, N]: summed over the bits
    return mi._gain_summary(gains, float(noise.shape[1]), 0.95)


def main() -> None:
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, load average {os.getloadavg()[0]:.1f}")
    masks, labels = synthetic_ensemble(np.random.default_rng(0))
    seconds, result = timed(mi.estimate, masks, labels)
    print(f"mi.estimate, masks {masks.shape}, {NUM_DRAWS} draws: {seconds:.1f} s wall  ({result.method}: "
          f"{describe(result)})")
    masks, noise, truth = noise_ensemble(np.random.default_rng(1))
    print(f"noise bits: masks {masks.shape}")
    for name, bound, num_bits in [("mi.noise_bits_bound", mi.noise_bits_bound, NOISE_BITS),
                                  ("mi.noise_bits_bound", mi.noise_bits_bound, 48),
                                  ("previous implementation", previous_noise_bits_bound, 48)]:
        seconds, result = timed(bound, masks, noise[:, :num_bits])
        print(f"{name}, {num_bits} bits: {seconds:.1f} s wall  ({describe(result)}; truth "
              f"{truth[:num_bits].sum():.2f} bits)")
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
