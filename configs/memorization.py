"""Memorization capacity of sparse subnetworks on randomly labelled data (No Free Prune, Kumar et al. 2024).

    python -m jaxprune.main --config=configs/memorization.py --workdir=runs/memorization
    python -m jaxprune.main --config=configs/memorization.py --config.dataset=fashion_mnist --config.num_examples=10000

Paper setting: 2-hidden-layer ReLU MLP of width 200, Adam lr 1e-3, batch 64, trained until the loss moves < 0.01
or the accuracy is flat for 3 epochs. The Gaussian defaults (n, d, classes, sparsities) are chosen so that the
dense net memorizes (almost) everything and the sparse nets only part: capacity-limited, differences visible.
"""
from jaxprune.config import add_pruning_keys, base


def get_config():
    c = add_pruning_keys(base())
    c.experiment = "memorization"
    c.dataset = "gaussian"  # labels='random' (uniform, independent of x); other datasets get all labels re-drawn
    c.labels = "random"
    c.num_examples = 1000
    c.num_test = 100  # unused: memorization is measured on the training set
    c.input_dim = 20
    c.num_classes = 10
    c.widths = (200, 200)
    c.methods = ("imp", "magnitude_after", "snip", "grasp", "synflow", "random")
    c.sparsities = (0.8, 0.9, 0.95)
    c.prune_fraction = 0.4  # IMP: fraction of survivors pruned per round (every round trained under the stop rule)
    c.ablations = ("shuffle",)  # rows '<method>+shuffle' (every method but random): same layer densities
    # Convergence (jaxprune/experiments/memorization.py): after epoch >= min_epochs, stop when
    c.stop_rule = "plateau"  # 'plateau': the training loss moved < loss_tol over loss_window epochs;
    #                          'interpolation': the training loss is <= loss_tol
    c.loss_tol = 0.01
    c.loss_window = 10
    c.accuracy_patience = 3  # ...or the training accuracy stayed within accuracy_tol for this many epochs (0: off)
    c.accuracy_tol = 0.0
    c.min_epochs = 30
    c.max_epochs = 100  # cap: every network records epochs and hit_cap
    return c
