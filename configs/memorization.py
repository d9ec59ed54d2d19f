"""Memorization capacity of sparse subnetworks on randomly labelled data (No Free Prune, Kumar et al. 2024).

    python -m jaxprune.main --config=configs/memorization.py --workdir=runs/memorization

Paper setting: 2-hidden-layer ReLU MLP of width 200, Adam, batch 64, trained to convergence. Deviation for the CPU
budget: learning rate 1e-2, not the paper's 1e-3 (at 1e-3 the sparse nets need 300-1000+ epochs to converge; see
docs/memorization.md). The paper's panels, meant for a GPU (20+ seeds):

    # Fig. 1a, Gaussian, the paper's learning rate
    --config.learning_rate=1e-3 --config.max_epochs=3000 --config.num_seeds=20
    # Fig. 1b, Fashion-MNIST (TFDS), every label random, the paper's MLP
    --config.dataset=fashion_mnist --config.num_examples=10000 --config.learning_rate=1e-3 --config.max_epochs=3000
    # Fig. 1c, a conv net on CIFAR-10 with a label-noise fraction (reported: noisy labels fitted, clean accuracy)
    --config.dataset=cifar10 --config.model=conv4 --config.label_noise=0.2 --config.learning_rate=1e-3 \
        --config.max_epochs=3000

The Gaussian defaults (n, d, classes, sparsities) are chosen so that the dense net memorizes everything and the
sparse nets at the higher sparsities only part: capacity-limited, differences visible.
"""
import math

from jaxprune.config import add_pruning_keys, base


def get_config():
    c = add_pruning_keys(base())
    c.experiment = "memorization"
    c.dataset = "gaussian"  # labels='random' (uniform, independent of x); other datasets get all labels re-drawn
    c.labels = "random"
    c.keep_labels = False  # real datasets: True keeps their own labels (else every label is re-drawn at random)
    c.num_examples = 500
    c.num_test = 100  # unused: memorization is measured on the training set
    c.input_dim = 20
    c.num_classes = 10
    c.widths = (200, 200)
    c.methods = ("imp", "magnitude_after", "magnitude_after_no_rewind", "snip", "grasp", "synflow", "random")
    c.sparsities = (0.9, 0.95, 0.98)
    c.num_seeds = 8
    c.learning_rate = 1e-2  # CPU budget (module docstring); the paper: 1e-3
    c.prune_fraction = 0.4  # IMP: fraction of survivors pruned per round (every round trained under the stop rule)
    # magnitude_after_no_rewind trains on from θ_T ⊙ m with a fresh Adam state ('reset') or the dense net's ('carry',
    # as Synaptic-Flow's singleshot does)
    c.no_rewind_optimizer = "reset"
    # Controls, rows '<method>+<control>' for every method but random: 'shuffle' (each layer's mask permuted: same
    # layer densities), 'swap' (the mask the method finds on D', the same inputs with the random labels drawn again,
    # trained on D), 'rewire' (each layer's mask rewired keeping every unit's in- and out-degree).
    c.ablations = ("shuffle", "swap", "rewire")
    c.rewire_swaps_per_edge = 10.0  # rewire: attempted double-edge swaps per edge (mixing diagnostic in results.json)
    # Convergence (jaxprune/experiments/memorization.py): after epoch >= min_epochs, stop when
    c.stop_rule = "plateau"  # 'plateau': the training loss moved < loss_tol over loss_window epochs;
    #                          'interpolation': the training loss is <= loss_tol
    c.loss_tol = 0.01
    c.loss_window = 20
    c.accuracy_patience = 10  # ...or the training accuracy stayed within accuracy_tol for this many epochs (0: off)
    c.accuracy_tol = 0.0
    c.min_epochs = 30
    c.max_epochs = 600  # cap: every network records epochs and hit_cap
    # A training point is memorized (the per-seed `memorized` of every row) when its cross-entropy is <= this; the
    # paper's "(log 2)/10". Every row also reports argmax `train_accuracy`.
    c.memorized_loss_max = math.log(2) / 10
    c.memorization_metric = "train_accuracy"  # what figures, comparisons and ordering use: or 'memorized'
    return c
