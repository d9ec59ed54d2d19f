"""Correlation between a sparse network's function and the label noise it was trained on (No Free Prune).

    python -m jaxprune.main --config=configs/noise_correlation.py --workdir=runs/noise_correlation

Gaussian regression y = f*(x) + z, z ~ N(0, noise_std²); every method pruned to each of ``sparsities`` and trained
under the memorization experiment's convergence rule (loss plateau; regression has no accuracy clause);
corr(f(x_i), z_i) and (1/n) Σ f(x_i) z_i / σ² over the training set at convergence, and across IMP's rounds.
"""
from configs import memorization


def get_config():
    c = memorization.get_config()
    c.experiment = "noise_correlation"
    c.dataset = "gaussian"
    c.task = "regression"
    c.teacher_widths = ()  # linear teacher f*(x) = sqrt(d) x Q (unit-variance target)
    c.noise_std = 0.5
    c.num_examples = 500
    c.num_test = 100
    c.input_dim = 20
    c.widths = (200, 200)
    c.accuracy_patience = 0  # the stop rule reads the loss only
    c.loss_tol = 0.001  # the regression loss (½ squared error) is ~σ²/2 = 0.125 at the noise level
    return c
