"""Mutual information between pruning masks and the data (No Free Prune's p_eff), in the memorization setting.

Data, architecture, optimizer and convergence rule are those of ``configs/memorization.py`` (loaded from it, so a
change there applies here): Gaussian inputs with random labels, MLP 200-200, Adam (its learning rate), batch 64.

Headline (noise-bit design): inputs and initialization fixed, each of ``noise_masks`` masks per seed is computed on
labels whose noise is drawn afresh (each of the first ``noise_bits`` examples carries its alternative random label
iff its fair bit z_j = 1), and I(M; Z | W) >= Σ_j I(M; z_j) is bounded in bits (mi.noise_bits_bound),
beside the memorization capacity of the same methods at the same sparsity.
Dataset-draw design (``methods``, capped at log2 num_draws bits): K draws x R repeats x seeds masks per method.

    python -m jaxprune.main --config=configs/mutual_information.py --workdir=runs/mutual_information
"""
from configs import memorization as memorization_config


def get_config():
    c = memorization_config.get_config()  # data, model, optimizer, epochs, prune_fraction, convergence rule
    c.experiment = "mutual_information"
    del c["sparsities"]
    c.sparsity = 0.98  # every method's final masks keep 2% of the prunable weights: where memorization capacity binds
    c.num_seeds = 1  # initializations W of the MI estimates (each mask ensemble is conditioned on one)
    # The masks' training (dense before magnitude_after, each IMP round) is a fixed budget per mask ensemble, not the
    # stop rule: under memorization's rule (lr 1e-2) the dense net and IMP's rounds at density >= 0.08 stop at 30-32
    # epochs (`dense_at_pruning`, `imp_rounds` of a memorization run); IMP's rounds below 0.08 train longer there.
    # The capacity column (the memorization experiment itself) uses the rule.
    c.epochs = 30
    # Dataset-draw design: random, magnitude, synflow (data-independent: true MI 0), snip, grasp, imp (one estimate
    # per round), magnitude_after (prune after t = 0..epochs epochs of dense training).
    c.methods = ("magnitude",)  # kept cheap: an estimate on 46000 weights takes ~1 min per stage here
    c.num_draws = 8  # K dataset draws (same inputs, labels redrawn): MI is capped at log2 K bits
    c.repeats = 4  # R masks per (init, draw) from the method's own randomness (data order, batches, scores)
    c.draw_noise = 0.1  # fraction of training labels each draw redraws uniformly (1.0 saturates at log2 K bits)
    c.estimator = "auto"  # mi.estimate method: auto, plugin, classifier
    c.num_folds = 5
    c.num_permutations = 1  # label shuffles for the permutation null
    c.confidence = 0.95  # of the seed-averaged interval (Bonferroni over seeds)
    # Noise-bit design (the headline): 0 noise_bits skips it.
    # random is left out (its true value is 0, and its masks vary in all 46000 weights: ~3 min per bound here)
    c.noise_methods = ("magnitude", "synflow", "snip", "grasp", "imp", "magnitude_after")
    c.noise_masks = 128  # masks per seed, each on its own label-noise draw
    c.noise_bits = 64  # the first noise_bits examples carry a noise bit, all decoded; the others keep their label
    c.noise_curve_every = 4  # bound every 4th stage (IMP round, epoch before magnitude pruning) and the last
    c.capacity = True  # run the memorization experiment at c.sparsity (subfolder memorization/) on these methods:
    c.capacity_methods = ("random", "magnitude", "synflow", "snip", "grasp", "imp", "magnitude_after")
    c.capacity_seeds = 2  # its seeds (seed 0 is the MI's initialization)
    return c
