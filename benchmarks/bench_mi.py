"""Wall time of one ``mi.estimate`` call on 4000 masks x 2000 weights (K = 4 dataset draws, 1000 masks each).

Masks: 16 weights copied from a per-draw prototype through a binary symmetric channel (flip prob 0.1), the
other 1984 independent fair coins, so the classifier regime is used. The time includes compilation and the
permutation null. Run: ``python benchmarks/bench_mi.py``.
"""
import time

import jax
import numpy as np

from jaxprune import mi

NUM_MASKS, NUM_WEIGHTS, NUM_DRAWS, NUM_INFORMATIVE, FLIP = 4000, 2000, 4, 16, 0.1


def synthetic_ensemble(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    labels = np.repeat(np.arange(NUM_DRAWS), NUM_MASKS // NUM_DRAWS)
    prototypes = rng.random((NUM_DRAWS, NUM_INFORMATIVE)) < 0.5
    informative = prototypes[labels] ^ (rng.random((NUM_MASKS, NUM_INFORMATIVE)) < FLIP)
    noise = rng.random((NUM_MASKS, NUM_WEIGHTS - NUM_INFORMATIVE)) < 0.5
    return np.concatenate([informative, noise], axis=1), labels


def main() -> None:
    masks, labels = synthetic_ensemble(np.random.default_rng(0))
    start = time.perf_counter()
    result = mi.estimate(masks, labels)
    seconds = time.perf_counter() - start
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, masks {masks.shape}, {NUM_DRAWS} draws")
    print(f"mi.estimate: {seconds:.1f} s wall  ({result.method}: {result.bits:.3f} bits in "
          f"[{result.lower:.3f}, {result.upper:.3f}], null {np.round(result.null_bits, 3).tolist()})")


if __name__ == "__main__":
    main()
