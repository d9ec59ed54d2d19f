"""No Free Prune Figure 4's mask ensemble: one vmapped program over datasets against a per-dataset loop.

Every method's masks at every pruned count (:func:`jaxprune.toy.all_masks`: IMP's 21 trainings, magnitude after
training, SNIP, GraSP, SynFlow) for datasets of 6 points drawn from the regression toy's 16 codes. ``vmapped``:
``jit(vmap(all_masks))`` over ``--datasets`` datasets, one call; ``loop``: ``jit(all_masks)`` called once per
dataset over ``--loop-datasets`` of them (the same compiled program each time). Both are timed after a warm-up call
(compile excluded) and give datasets/s; the ratio is vmapped / loop. The masks of the looped datasets are checked
equal to the vmapped ones.

    python benchmarks/bench_toy_masks.py            # 4000 vmapped, 200 looped
"""
import argparse
import time

import jax
import numpy as np

from jaxprune import toy


def timed(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return time.perf_counter() - start, out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", type=int, default=4000)
    parser.add_argument("--loop-datasets", type=int, default=200)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for the test suite")
    args = parser.parse_args(argv)
    sizes = toy.Toy(steps=10, synflow_rounds=5) if args.smoke else toy.Toy()
    n_vmap, n_loop = (64, 4) if args.smoke else (args.datasets, args.loop_datasets)
    theta0 = toy.init(sizes, jax.random.key(0))
    codes = np.asarray(jax.random.randint(jax.random.key(1), (n_vmap, 6), 0, sizes.num_codes))
    vmapped = jax.jit(jax.vmap(lambda c: toy.all_masks(sizes, theta0, c)))
    single = jax.jit(lambda c: toy.all_masks(sizes, theta0, c))
    timed(vmapped, codes)  # compile
    timed(single, codes[0])
    vmap_s, masks = timed(vmapped, codes)
    start = time.perf_counter()
    looped = [jax.block_until_ready(single(c)) for c in codes[:n_loop]]
    loop_s = time.perf_counter() - start
    for i, out in enumerate(looped):
        for method in toy.METHODS:
            np.testing.assert_array_equal(np.asarray(out[method]), np.asarray(masks[method][i]))
    rates = {"vmapped": n_vmap / vmap_s, "loop": n_loop / loop_s}
    print(f"| program | datasets | seconds | datasets/s |\n|---|---|---|---|\n"
          f"| vmapped | {n_vmap} | {vmap_s:.2f} | {rates['vmapped']:.1f} |\n"
          f"| per-dataset loop | {n_loop} | {loop_s:.2f} | {rates['loop']:.1f} |\n\n"
          f"ratio vmapped / loop: {rates['vmapped'] / rates['loop']:.1f}x (compile excluded; masks equal)")
    return rates


if __name__ == "__main__":
    main()
