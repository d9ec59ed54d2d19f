"""AutoSparse on MNIST-1D: learn pruning at initialization from IRP survival, compare with the PaI methods and
IMP at high sparsity, ablate the features, transfer to another model. 4 seeds, a few minutes on a laptop CPU.

    python -m jaxprune.main --config=configs/autosparse.py --workdir=runs/autosparse
    # GPU, as in the paper: ResNet-18/CIFAR-10 -> VGG-16 on CIFAR-10 and CIFAR-100
    python -m jaxprune.main --config=configs/autosparse.py --workdir=runs/autosparse_cifar \\
        --config.model=resnet18 --config.dataset=cifar10 --config.target_model=vgg16 \\
        --config.transfer_targets="('vgg16:cifar100',)" --config.epochs=30 --config.rounds=10 \\
        --config.optimizer=sgd --config.learning_rate=0.1 --config.batch_size=128 --config.predictor=backbone
"""
from jaxprune.config import add_pruning_keys, base


def get_config():
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
    c.gradient = "batch"  # gradient feature on pai_batches batches, or 'train_set': summed over it (reference)
    c.predictor_steps = 1000
    c.predictor_batch_size = 4096
    c.predictor_learning_rate = 1e-3
    c.predictor_window = 64  # backbone: rows of one layer per training window
    c.feature_set = ("param", "grad")  # the AutoSparse predictor's inputs
    c.descriptors = True  # also layer depth, log fan-in, log fan-out, kind
    c.ablations = ("param", "grad", "param+grad")  # feature sets ('+'-joined) of the ablation table
    # How the predicted scores prune: 'global' (one threshold, the reference's rule) or layerwise with per-layer
    # densities 'uniform', 'erk' or 'irp' (those the source IRP reaches at that sparsity), in `iterations` steps.
    c.autosparse_allocation = "global"
    c.autosparse_iterations = 1
    # Variants compared with it on the same held-out seeds ('key=value,...' overriding the two options above or
    # predictor_objective).
    c.variants = ("allocation=erk", "allocation=irp", "allocation=irp,objective=rank", "allocation=irp,iterations=5")
    # Target: prune at init and train; "" = the source model / dataset. Transfer: 'model:dataset' entries.
    c.target_model = ""
    c.target_dataset = ""
    c.transfer_targets = ("lenet300_100:mnist1d",)
    c.methods = ("random", "magnitude", "snip", "grasp", "synflow", "imp")  # compared with autosparse
    c.sparsities = (0.9, 0.95, 0.98)
    return c
