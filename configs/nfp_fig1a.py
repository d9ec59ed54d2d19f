"""No Free Prune, Figure 1a as published: memorization capacity on Gaussian data, 250 networks AND 250 datasets.

    python -m jaxprune.main --config=configs/nfp_fig1a.py --workdir=runs/nfp_fig1a

The paper's protocol (Kumar, Luo, Sellke 2024, Appendix C; ../shared/papers/no_free_prune_experiments.md):
n = 30 points x ~ N(0, I/d) in d = 30 with random ±1 labels (two classes, cross-entropy), a 2-hidden-layer ReLU MLP,
learning rate 1e-2, k = 250 repetitions each with its OWN network and its OWN dataset (``data_per_seed``), methods
IMP, SNIP, Random, SynFlow, GraSP at sparsities on IMP's 1 − 0.8^r grid up to ≈ 0.993, a point memorized when its
cross-entropy is ≤ (log 2)/10 (``memorized``), plotted as mean ± standard error over the 250.

Settings the paper leaves unstated for 1a, chosen here (each overridable):

- ``widths = (200, 200)``: the width the paper states for its other MLP (Fig. 1b).
- ``optimizer = 'adam'``: Synaptic-Flow's default and the paper's optimizer in 1b (``--config.optimizer=sgd``
  for the alternative, momentum 0.9).
- ``batch_size = 30``: full batch (n = 30 is below the 64 of 1b).
- ``weight_init = 'torch_default'``: PyTorch's nn.Linear init, that of Synaptic-Flow's MLP (their code was PyTorch).
- Stop rule: ``plateau``, the training loss moved < 0.01 over 20 epochs (after at least 30), no accuracy clause
  (an argmax clause stops nets whose points are right but not yet at the loss threshold), cap 1000 epochs
  (``--config.stop_rule=interpolation``: train until the loss is ≤ 0.01 instead).
- Measured at k = 100 (docs/nfp_paper_figures.md): SGD under this plateau rule stops nets that are still learning
  (even dense nets memorize only 0.59), so it measures training speed, not capacity; the interpolation rule raises
  random's and (at 99.3%) SNIP's and GraSP's memorized fractions, and IMP's lead at 99.3% stays, smaller.
- ``synflow_rounds = 100``: SynFlow as published (Synaptic-Flow's default runs 1 round).
- SNIP and GraSP score on one batch of 30, i.e. the whole training set.
"""
import math

from configs import memorization

SPARSITIES = tuple(round(1 - 0.8 ** r, 6) for r in range(11, 23))  # 0.914 ... 0.993 (r = 22)


def get_config():
    c = memorization.get_config()
    c.dataset = "gaussian"
    c.data_per_seed = True
    c.labels = "random"
    c.num_classes = 2
    c.num_examples = 30
    c.num_test = 1  # unused: memorization is measured on the training set
    c.input_dim = 30
    c.widths = (200, 200)
    c.weight_init = "torch_default"
    c.optimizer = "adam"
    c.learning_rate = 1e-2
    c.batch_size = 30
    c.eval_batch_size = 30  # evaluation pads to a whole chunk: 30, not 1000, rows per epoch (33x less work)
    c.methods = ("imp", "snip", "random", "synflow", "grasp")
    c.ablations = ()
    c.sparsities = SPARSITIES
    c.prune_fraction = 0.2
    c.synflow_rounds = 100
    c.num_seeds = 250
    c.memorized_loss_max = math.log(2) / 10
    c.memorization_metric = "memorized"
    c.stop_rule = "plateau"
    c.loss_tol = 0.01
    c.loss_window = 20
    c.accuracy_patience = 0
    c.min_epochs = 30
    c.max_epochs = 1000
    return c
