"""Mutual information between pruning masks and the data (No Free Prune's p_eff), minutes on a laptop CPU.

Gaussian inputs with random binary labels (pure label noise, the Law of Robustness setting): each dataset draw
redraws a fraction of the labels, so I(m; D) is the information the mask holds about the noise.

    python -m jaxprune.main --config=configs/mutual_information.py --workdir=runs/mi
    python -m jaxprune.main --config=configs/mutual_information.py --workdir=runs/mi_bits --config.noise_bits=64
"""
from jaxprune.config import add_pruning_keys, base


def get_config():
    c = add_pruning_keys(base())
    c.experiment = "mutual_information"
    c.dataset = "gaussian"
    c.labels = "random"
    c.num_classes = 2
    c.num_examples = 256
    c.num_test = 256
    c.widths = (64,)
    c.epochs = 8
    c.batch_size = 32
    c.learning_rate = 1e-2
    c.num_seeds = 2
    c.prune_fraction = 0.3  # IMP: 7 rounds to sparsity 0.9
    # random, magnitude, synflow (data-independent: true MI 0), snip, grasp (one batch), imp (prune_fraction per
    # round, one estimate per round), magnitude_after (prune after t = 0..epochs epochs of dense training).
    c.methods = ("random", "magnitude", "synflow", "snip", "grasp", "imp", "magnitude_after")
    c.sparsity = 0.9  # every method's final masks keep 10% of the prunable weights
    c.num_draws = 8  # K dataset draws (same inputs, labels redrawn): MI is capped at log2 K bits
    c.repeats = 8  # R masks per (init, draw) from the method's own randomness (data order, batches, scores)
    c.draw_noise = 0.1  # fraction of training labels each draw redraws uniformly (1.0 saturates at log2 K bits)
    c.estimator = "auto"  # mi.estimate method: auto, plugin, classifier
    c.num_folds = 5
    c.num_permutations = 4  # label shuffles for the permutation null
    c.confidence = 0.95  # of the seed-averaged interval (Bonferroni over seeds)
    c.noise_bits = 0  # > 0: decode this many label bits with mi.noise_bits_bound (binary labels)
    c.noise_methods = ("random", "snip", "imp")
    return c
