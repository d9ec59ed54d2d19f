"""Correlation between a sparse network's function and the label noise it was trained on (No Free Prune).

    python -m jaxprune.main --config=configs/noise_correlation.py --workdir=runs/noise_correlation

Gaussian regression y = f*(x) + z, z ~ N(0, noise_std²); every method pruned to ``sparsity``; corr(f(x_i), z_i)
over the training set after every epoch, and across IMP's rounds.
"""
from jaxprune.config import add_pruning_keys, base


def get_config():
    c = add_pruning_keys(base())
    c.experiment = "noise_correlation"
    c.dataset = "gaussian"
    c.task = "regression"
    c.teacher_width = 0  # linear teacher f*(x) = sqrt(d) x Q (unit-variance target)
    c.noise_std = 0.5
    c.num_examples = 500
    c.num_test = 100
    c.input_dim = 20
    c.widths = (64, 64)
    c.methods = ("imp", "magnitude_after", "snip", "grasp", "synflow", "random")
    c.sparsity = 0.9
    c.epochs = 40  # every network, and every IMP round, trains this long
    c.prune_fraction = 0.4  # IMP: fraction of survivors pruned per round
    return c
