"""No Free Prune, Figures 2a, 3, 2b, 2c: the student's correlation with the label noise, epoch by epoch.

    python -m jaxprune.main --config=configs/nfp_fig2.py --workdir=runs/nfp_fig2                  # Fig 2a: 5 IMP rounds
    python -m jaxprune.main --config=configs/nfp_fig2.py:long --workdir=runs/nfp_fig3             # Fig 3: 15 rounds
    python -m jaxprune.main --config=configs/nfp_fig2.py:lr_sweep --workdir=runs/nfp_fig2b        # Fig 2b
    python -m jaxprune.main --config=configs/nfp_fig2.py:gradient_noise --workdir=runs/nfp_fig2c  # Fig 2c

Student–teacher regression (the paper's Appendix C.1): x ∈ R^50 Gaussian, n = 1000, y = f*(x) + z with σ² = 1,
f* a random 3-layer ReLU teacher of width 50 (jaxprune.data.gaussian); every seed draws its own teacher, inputs
and noise on device (``data_per_seed``); student a 5-layer ReLU MLP of width 100 (4 hidden layers), Adam at 1e-3,
squared error; IMP prunes the lowest-magnitude 20% of the surviving weights every 100 epochs and rewinds to θ₀;
k = 25 seeds.
Settings the paper leaves unstated, chosen here: batch size 100 (every example every epoch, 10 steps); global
magnitude scope over the kernels (biases unpruned); the teacher's init and centred ReLU as in
jaxprune.data.gaussian. Figures 2b/2c: no
pruning (1 round of 100 epochs), sweeping the learning rate or the std of i.i.d. Gaussian gradient noise, the sweep
vmapped as one more axis of networks.
"""
from jaxprune.config import base

PRESETS = ("", "long", "lr_sweep", "gradient_noise")


def get_config(preset: str = ""):
    """Fig 2a, or the preset's figure (``--config=configs/nfp_fig2.py:<preset>``)."""
    c = base()
    c.experiment = "noise_correlation_curve"
    c.dataset = "gaussian"
    c.task = "regression"
    c.input_dim = 50
    c.num_examples = 1000
    c.num_test = 100
    c.teacher_widths = (50, 50)  # a 3-layer teacher: two hidden ReLU layers of width 50, one output
    c.data_per_seed = True  # each seed draws its own teacher, inputs and noise (the paper's k = 25 repetitions)
    c.noise_std = 1.0  # σ² = 1
    c.model = "mlp"
    c.widths = (100, 100, 100, 100)  # 5 layers
    c.num_seeds = 25
    c.optimizer = "adam"
    c.learning_rate = 1e-3
    c.batch_size = 100
    c.epochs = 100  # per IMP round
    c.rounds = 5
    c.prune_fraction = 0.2
    c.gradient_noise_std = 0.0
    c.sweep = ""  # '', 'learning_rate' or 'gradient_noise_std'
    c.sweep_values = ()
    if preset == "long":
        c.rounds = 15
    elif preset == "lr_sweep":
        c.rounds, c.sweep, c.sweep_values = 1, "learning_rate", (1e-4, 2.5e-4, 5e-4, 7.5e-4, 1e-3)
    elif preset == "gradient_noise":
        c.rounds, c.sweep, c.sweep_values = 1, "gradient_noise_std", (0.0, 0.1, 0.2, 0.3, 0.5)
    elif preset:
        raise ValueError(f"configs/nfp_fig2.py:{preset}: the presets are {PRESETS}")
    return c
