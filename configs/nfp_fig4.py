"""No Free Prune, Figure 4 (Appendix C.2): exact mutual information between masks and data on the toy model.

    python -m jaxprune.main --config=configs/nfp_fig4.py --workdir=runs/nfp_fig4
    python -m jaxprune.main --config=configs/nfp_fig4.py:classification --workdir=runs/nfp_fig4_classification

Datasets: 6 points from {±1}^3 with labels ±1, all i.i.d. uniform. Net: one hidden ReLU layer of width 4, one
output, 21 parameters, every one prunable (biases included), fixed init θ₀ (``seed``). Trained by population GD.
Masks of IMP (one parameter per round, rewinding to θ₀), magnitude after training, SNIP, GraSP and SynFlow for
every count 0 … P − 1 of pruned parameters over 32,000 sampled datasets, and exactly over every dataset up to
order (54,264 multisets). Settings the paper leaves unstated, chosen here: PyTorch's default init
U(±1/√fan_in) for weights and biases; population GD with learning rate 0.1 for 100 steps (``train_steps``) on
mean ½ (f − y)²; IMP prunes one parameter per round; classification has two logits (softmax cross-entropy,
width 3: P = 20, so counts 0 … 19); GraSP's temperature 200 (classification only) and SynFlow's 100 rounds as in
Synaptic-Flow.
"""
from jaxprune.config import base

PRESETS = ("", "classification")


def get_config(preset: str = ""):
    """Regression (the default) or ``preset='classification'``."""
    c = base()
    c.experiment = "toy_mutual_information"
    c.num_seeds = 1  # one fixed initialization θ₀ (seed)
    c.task = "regression"
    c.input_dim = 3  # points in {±1}^3
    c.num_examples = 6  # points per dataset
    c.widths = (4,)
    c.learning_rate = 0.1  # population gradient descent
    c.train_steps = 100
    c.grasp_temperature = 200.0
    c.synflow_rounds = 100
    c.methods = ("imp", "magnitude_after", "snip", "grasp", "synflow")
    c.num_datasets = 32_000
    c.sample_sizes = (1_000, 4_000, 32_000)  # convergence of the sampled estimate
    c.exact = True  # enumerate every dataset up to order (54,264 for 6 points of 16 codes)
    c.max_exact_datasets = 1_000_000
    if preset == "classification":
        c.task = "classification"
        c.widths = (3,)
    elif preset:
        raise ValueError(f"unknown preset {preset!r}: one of {PRESETS}")
    return c
