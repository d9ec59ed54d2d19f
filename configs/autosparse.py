"""AutoSparse on MNIST-1D: learn pruning at initialization from IRP survival, compare with the PaI methods and
IMP at high sparsity on held-out seeds, ablate the features, compare pruning variants, transfer to another model.
4 seeds, about 12 minutes on a loaded 2-core CPU.

    python -m jaxprune.main --config=configs/autosparse.py --workdir=runs/autosparse
    # GPU, the reference's protocol (preset 'paper'): ResNet-18/CIFAR-10 -> VGG-16 on CIFAR-10 and CIFAR-100
    python -m jaxprune.main --config=configs/autosparse.py:paper --workdir=runs/autosparse_paper
"""
from jaxprune.config import add_pruning_keys, base

PRESETS = ("", "paper")


def paper(c):
    """The reference code's protocol (papers/protocols.md): IRP of ResNet-18 on CIFAR-10 by SNIP on the trained
    weights, 20 rounds removing equal shares of the original weights down to 1% (0.7943^20 = 0.0100), rewinding to
    θ₀, 160 epochs of momentum SGD per round (lr 0.01, batch 64, wd 5e-4; the step schedule here decays x0.1 at
    50% and 75%, the reference x0.2 at 60 and 120 epochs); gradient feature summed over the training set; the
    "fc" predictor 2→16→64→1024→1024→64→1 with BatchNorm, MSE, Adam lr 0.01, batch 4096 (~10 epochs over 3 seeds'
    rows); one global threshold; transfer to VGG-16 on CIFAR-10 (target) and CIFAR-100."""
    c.update(dict(model="resnet18", dataset="cifar10", target_model="vgg16", transfer_targets=("vgg16:cifar100",),
                  rounds=20, prune_fraction=0.2057, irp_schedule="linear", irp_criterion="snip", epochs=160,
                  optimizer="sgd", learning_rate=0.01, momentum=0.9, weight_decay=5e-4, lr_schedule="step",
                  batch_size=64, pai_batches=10, gradient="train_set", predictor="mlp_bn",
                  predictor_hidden=(16, 64, 1024, 1024, 64), predictor_learning_rate=0.01, predictor_steps=80_000,
                  predictor_batch_size=4096, descriptors=False, sparsities=(0.9, 0.95, 0.99),
                  methods=("random", "snip", "grasp", "synflow", "imp")))
    return c


def get_config(preset: str = ""):
    """The default config, or with ``preset='paper'`` (``--config=configs/autosparse.py:paper``) the reference's."""
    c = add_pruning_keys(base())
    c.experiment = "autosparse"
    # Source: IRP runs on (model, dataset, widths); every seed twice (two data orders, for the CCC).
    c.model = "mlp"
    c.dataset = "mnist1d"
    c.widths = (100, 100)
    c.epochs = 10
    c.num_seeds = 4  # the predictor trains on seeds 0..n-2; seed n-1 is held out (prediction_spearman)
    c.rounds = 8  # IRP rounds: survival counts in 0..rounds
    c.prune_fraction = 0.4  # of the survivors per round (source IRP and IMP); 0.6^8 = 1.7% left
    c.irp_schedule = "geometric"  # source IRP: or 'linear', equal shares of the original weights to 0.6^8 (reference)
    c.irp_criterion = "magnitude"  # source IRP prunes by |θ| or 'snip' on the trained weights (reference); IMP: |θ|
    # Predictor: 'mlp' (per weight) or 'backbone' (encoder -> residual 1-D convs along a layer -> decoder).
    c.predictor = "mlp"  # or 'mlp_bn' (Dense-BatchNorm-ReLU; reference: hidden (16, 64, 1024, 1024, 64)), 'backbone'
    c.predictor_hidden = (64, 64)
    c.predictor_objective = "mse"  # or 'rank': pairwise logistic loss within a layer
    # 'image' (GPU): each weight embedded alone into a size x size x 3 image, ResNet-18 of this stem width (reference)
    c.predictor_image_size = 32
    c.predictor_image_width = 64
    c.gradient = "batch"  # gradient feature on pai_batches batches, or 'train_set': summed over it (reference)
    c.predictor_steps = 1000
    c.predictor_batch_size = 4096
    c.predictor_learning_rate = 1e-3
    c.predictor_window = 64  # backbone: rows of one layer per training window
    c.feature_set = ("param", "grad")  # the AutoSparse predictor's inputs
    c.descriptors = True  # also layer depth, log fan-in, log fan-out, kind
    c.ablations = ("param", "grad", "param+grad", "param+grad+synflow")  # feature sets ('+'-joined), ablation table
    # How the predicted scores prune: 'global' (one threshold, the reference's rule) or layerwise with per-layer
    # densities 'uniform', 'erk' or 'irp' (those the source IRP reaches at that sparsity), in `iterations` steps.
    c.autosparse_allocation = "global"
    c.autosparse_iterations = 1
    # Variants compared with it on the same held-out seeds ('key=value,...' overriding the two options above,
    # objective (predictor_objective) or features (feature_set, '+'-joined; 'synflow' is path-aware)).
    c.variants = ("allocation=uniform", "allocation=erk", "allocation=irp", "allocation=erk,objective=rank",
                  "allocation=erk,iterations=5", "features=param+grad+synflow,allocation=erk",
                  "features=param+grad+synflow,allocation=erk,iterations=5")
    # Target: prune at init and train; "" = the source model / dataset. Transfer: 'model:dataset' entries.
    c.target_model = ""
    c.target_dataset = ""
    c.transfer_targets = ("lenet300_100:mnist1d",)
    # Compared with autosparse; the AutoSparse paper's baselines are snip, grasp, npb and random.
    c.methods = ("random", "magnitude", "snip", "grasp", "synflow", "npb", "imp")
    c.sparsities = (0.9, 0.95, 0.98)
    if preset not in PRESETS:
        raise ValueError(f"configs/autosparse.py:{preset}: the presets are {PRESETS}")
    return paper(c) if preset == "paper" else c
