"""Iterative rewind pruning on MNIST-1D: survival counts for 4 seeds in a few minutes on a laptop CPU.

    python -m jaxprune.main --config=configs/irp.py --workdir=runs/irp
    python -m jaxprune.main --config=configs/irp.py --workdir=runs/irp16 --config.num_seeds=16 --config.rounds=20
"""
from jaxprune.config import base


def get_config():
    c = base()
    c.experiment = "irp"
    c.epochs = 20
    c.rounds = 10  # train -> prune -> rewind repetitions; survival counts lie in 0..rounds
    c.prune_fraction = 0.2  # fraction of the surviving prunable weights removed each round
    c.rewind_step = 0  # rewind survivors to their values after this many steps of round 0 (0 = initialization)
    c.scope = "global"  # magnitude threshold over all prunable weights ('global') or per layer ('layerwise')
    return c
