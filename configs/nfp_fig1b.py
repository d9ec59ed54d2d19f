"""No Free Prune, Figure 1b as published: memorization capacity on Fashion-MNIST with noisy inputs (GPU preset).

    python -m jaxprune.main --config=configs/nfp_fig1b.py --workdir=runs/nfp_fig1b

Needs Fashion-MNIST prepared through TFDS (``tfds build fashion_mnist --file_format=array_record``; the run names
the command if it is missing) and, at k = 10 on 60,000 images, a GPU: on the 2-core CPU it is tested at tiny size
on TFDS mock data only (tests/test_nfp_fig1.py).

The paper's protocol (Appendix C; ../shared/papers/no_free_prune_experiments.md): Fashion-MNIST with Gaussian noise
of variance σ² = 3 added to every input, the ORIGINAL labels kept (``keep_labels``); a 2-hidden-layer ReLU MLP of
width 200, Adam, lr 1e-3, batch 64, trained "till convergence in loss to within 0.01 (or until accuracy doesn't
change for three consecutive epochs)"; k = 10 seeds, mean and standard error; methods IMP, SNIP, Random, SynFlow,
GraSP and MagAfter (magnitude pruning after training, added by the authors to Synaptic-Flow's code, whose singleshot
pre-trains, prunes and post-trains without rewinding and with the pre-training optimizer state:
``magnitude_after_no_rewind`` with ``no_rewind_optimizer='carry'``); sparsities 0.97 to 0.997; the y-axis is the
train accuracy (``memorization_metric``; ``memorized``, the per-point loss criterion, is in every row too).

Chosen where the paper is silent (each overridable):

- Normalization before the noise: pixels scaled to [0, 1] and standardized per channel (the loader's), THEN the
  noise of variance 3 added, so σ² is in units of the pixel variance (a signal-to-noise ratio of 1/3).
- The stop rule read literally: the training loss moved < 0.01 from one epoch to the next, or the train accuracy
  unchanged for 3 epochs (``stop_rule='plateau'``, window 1, patience 3; ``--config.stop_rule=interpolation``
  reads "within 0.01" as loss ≤ 0.01), cap 500 epochs.
- ``weight_init='torch_default'``: Synaptic-Flow's MLP keeps PyTorch's nn.Linear init.
- Sparsities 0.97, 0.98, 0.99, 0.995, 0.997 (the paper's axis, 0.97 to 1.00); IMP prunes 20% per round to reach
  them; SynFlow 100 rounds; SNIP/GraSP score on one batch of 64.
"""
from configs import memorization


def get_config():
    c = memorization.get_config()
    c.dataset = "fashion_mnist"
    c.keep_labels = True
    c.input_noise_var = 3.0
    c.num_examples = 0  # the whole training split
    c.num_test = 0
    c.widths = (200, 200)
    c.weight_init = "torch_default"
    c.optimizer = "adam"
    c.learning_rate = 1e-3
    c.batch_size = 64
    c.methods = ("imp", "snip", "random", "synflow", "grasp", "magnitude_after_no_rewind")
    c.no_rewind_optimizer = "carry"
    c.ablations = ()
    c.sparsities = (0.97, 0.98, 0.99, 0.995, 0.997)
    c.prune_fraction = 0.2
    c.num_seeds = 10
    c.memorization_metric = "train_accuracy"
    c.stop_rule = "plateau"
    c.loss_tol = 0.01
    c.loss_window = 1
    c.accuracy_patience = 3
    c.accuracy_tol = 0.0
    c.min_epochs = 0
    c.max_epochs = 500
    return c
