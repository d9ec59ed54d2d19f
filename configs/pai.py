r"""Pruning at initialization vs. after training on MNIST-1D: test accuracy against sparsity, 4 seeds, minutes on
a laptop CPU.

    python -m jaxprune.main --config=configs/pai.py --workdir=runs/pai
    python -m jaxprune.main --config=configs/pai.py --workdir=runs/sanity \
        --config.ablations="('shuffle','reinit','invert')"
"""
from jaxprune.config import add_pruning_keys, base


def get_config():
    c = add_pruning_keys(base())
    c.experiment = "pai"
    c.epochs = 20
    # Any of random, magnitude, snip, grasp, synflow, iterative_snip, force, prospr, npb (at initialization), imp,
    # magnitude_after (after training). 'imp' (iterative magnitude pruning with rewinding, prune_fraction per round)
    # is the after-training reference. Their options: synflow_rounds, iterative_rounds, pai_schedule, prospr_*,
    # npb_alpha, grasp_temperature (jaxprune/config.py); sparsity_target 'effective' prunes every one-shot method
    # to an effective sparsity (kept weights on an input-output path; not imp).
    c.methods = ("random", "magnitude", "snip", "grasp", "synflow", "iterative_snip", "force", "prospr", "npb", "imp")
    c.sparsities = (0.5, 0.8, 0.9, 0.95, 0.98)
    c.dense_reference = True  # also train the unpruned network (a row with method 'dense', sparsity 0)
    # Sanity checks of Frankle et al. 2021, each adding rows '<method>+<ablation>' for every method but random:
    # 'shuffle' (permute the mask within each layer), 'reinit' (train the mask from a fresh initialization),
    # 'invert' (keep the lowest scores; PaI methods only).
    # Controls shared with memorization: 'rewire' (each layer's mask rewired keeping every unit's in- and out-degree;
    # Dense kernels only) and 'swap' (the mask found on the training set with its noisy labels drawn again; needs
    # label_noise > 0).
    c.ablations = ()
    c.rewire_swaps_per_edge = 10.0  # rewire: attempted double-edge swaps per edge
    return c
