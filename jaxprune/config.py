"""The keys every experiment shares, their defaults, and their validation.

Config files in ``configs/`` start from :func:`base` and add their experiment's keys; every key can be
overridden on the command line (``--config.num_seeds=16``). :func:`validate_common` checks the shared keys
before any work starts and raises :class:`~jaxprune.errors.ConfigError` naming the key and what is allowed.
"""
from __future__ import annotations

import ml_collections

from jaxprune.errors import ConfigError

TASKS = ("classification", "regression")
GAUSSIAN_LABELS = ("random", "teacher")
SPARSITY_TARGETS = ("nominal", "effective")


def base() -> ml_collections.ConfigDict:
    """Shared keys with defaults that run in minutes on a laptop CPU."""
    c = ml_collections.ConfigDict()
    c.experiment = ""
    # Data (see jaxprune/data): the dataset and its draw; the gaussian-only keys are ignored elsewhere.
    c.dataset = "mnist1d"
    c.data_seed = 0
    c.data_dir = ""  # TFDS data directory; "" = TFDS default ($TFDS_DATA_DIR or ~/tensorflow_datasets)
    c.label_noise = 0.0  # fraction of training labels replaced by uniformly random classes
    c.input_noise_var = 0.0  # variance of Gaussian noise added to every input (after normalization), labels kept
    c.num_examples = 0  # training-set size; 0 = the dataset's own (gaussian: 1000), > 0 = a random subset / draw
    c.num_test = 0  # test-set size, same rule
    c.input_dim = 20  # gaussian: dimension d
    c.num_classes = 10  # gaussian: classes
    c.labels = "random"  # gaussian: 'random' (independent of x) or 'teacher'
    c.teacher_widths = ()  # gaussian teacher: () = linear, (w_1, ..., w_L) = hidden ReLU layers of those widths
    c.task = "classification"  # gaussian: or 'regression' (y = teacher(x) + noise_std * z)
    c.noise_std = 0.5
    c.data_per_seed = False  # gaussian: every seed draws its own dataset on device (memorization, noise_correlation)
    # Model.
    c.model = "mlp"
    c.widths = (200, 200)  # mlp hidden widths
    c.weight_init = "kaiming_normal"  # or 'torch_default' (MLPs: PyTorch's nn.Linear init, Synaptic-Flow's MLP)
    c.prunable = ""  # regex over '/'-joined kernel paths, e.g. 'Dense_1': only those are pruned; '' = every kernel
    # Seeds: seed i of a sweep uses fold_in(PRNGKey(seed), i), so any seed can be rerun alone.
    c.num_seeds = 4
    c.seed = 0
    c.seed_ids = ()  # run only these seeds of the sweep, e.g. (3,): the CLI sets num_seeds = len(seed_ids)
    # Optimization (one training run).
    c.epochs = 10
    c.batch_size = 64
    c.optimizer = "adam"
    c.learning_rate = 1e-3
    c.momentum = 0.9  # sgd only
    c.weight_decay = 0.0
    c.lr_schedule = "constant"
    c.warmup_epochs = 0
    c.eval_batch_size = 1000
    # Running (results do not depend on these; a rerun may change them).
    c.overwrite = False  # rerun into a workdir that already holds a finished run
    c.checkpoint_every_steps = 0  # IRP/IMP: also checkpoint every N training steps within a round; 0 = per round
    return c


# Keys that change how a run is carried out, not what it computes: a workdir's run resumes whatever they are.
RUN_KEYS = ("overwrite", "checkpoint_every_steps")


def add_pruning_keys(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Keys of experiments that build masks with several methods (see jaxprune/experiments/masking.py)."""
    c.scope = "global"  # one threshold over all prunable weights ('global') or one per layer ('layerwise')
    c.allocation = "uniform"  # layerwise densities: 'uniform' or 'erk'
    c.pai_batches = 1  # batches of batch_size examples SNIP/GraSP score on
    c.synflow_rounds = 100  # iterative SynFlow rounds
    c.iterative_rounds = 10  # iterative_snip and force rounds (naver/force's num_steps default)
    c.pai_schedule = "exponential"  # density schedule of the multi-round methods: 'exponential' or 'linear'
    c.prospr_steps = 3  # ProsPr inner SGD steps, learning rate and momentum (mil-ad/prospr's CLI defaults)
    c.prospr_lr = 0.1
    c.prospr_momentum = 0.0
    c.npb_alpha = 0.99  # NPB: weight of effective nodes against paths (pvh1602/NPB main.py default)
    c.sparsity_target = "nominal"  # 'nominal' (kept weights) or 'effective' (kept weights on an input-output path)
    c.grasp_temperature = 200.0
    c.prune_fraction = 0.2  # IMP: fraction of surviving weights pruned per round
    c.rewind_step = 0  # IMP: rewind to initialization (0) or to the weights after this many steps
    return c


def validate_pruning(config) -> None:
    """Check the keys :func:`add_pruning_keys` adds."""
    from jaxprune import masks  # local: keep `import jaxprune.config` light for config files

    check_choice(config, "scope", masks.SCOPES)
    check_choice(config, "allocation", masks.ALLOCATIONS)
    check_positive_int(config, "pai_batches")
    check_positive_int(config, "synflow_rounds")
    check_positive_int(config, "iterative_rounds")
    check_positive_int(config, "prospr_steps", minimum=0)
    check_choice(config, "pai_schedule", ("exponential", "linear"))
    check_choice(config, "sparsity_target", SPARSITY_TARGETS)
    _check(config.sparsity_target == "nominal" or "imp" not in config.get("methods", ()),
           "config.sparsity_target='effective': not for imp (one run through its rounds, no search over its "
           "sparsity); remove imp from config.methods or use 'nominal'")
    _check(isinstance(config.prospr_lr, (int, float)) and config.prospr_lr > 0,
           f"config.prospr_lr={config.prospr_lr!r}: must be > 0")
    _check(isinstance(config.prospr_momentum, (int, float)) and 0 <= config.prospr_momentum < 1,
           f"config.prospr_momentum={config.prospr_momentum!r}: must be in [0, 1)")
    _check(isinstance(config.npb_alpha, (int, float)) and 0 <= config.npb_alpha <= 1,
           f"config.npb_alpha={config.npb_alpha!r}: must be in [0, 1]")
    check_positive_int(config, "rewind_step", minimum=0)
    check_fraction(config, "prune_fraction")
    _check(config.prune_fraction > 0, f"config.prune_fraction={config.prune_fraction!r}: must be in (0, 1)")
    _check(config.grasp_temperature > 0, f"config.grasp_temperature={config.grasp_temperature!r}: must be > 0")


def check_sparsities(config, key: str = "sparsities") -> None:
    """``config[key]`` must be a non-empty sequence of distinct numbers in [0, 1)."""
    values = config[key]
    _check(isinstance(values, (list, tuple)) and len(values) > 0 and len(set(values)) == len(values)
           and all(isinstance(v, (int, float)) and 0.0 <= v < 1.0 for v in values),
           f"config.{key}={values!r}: must be a non-empty tuple of distinct sparsities in [0, 1)")


def check_methods(config, allowed, key: str = "methods") -> None:
    """``config[key]`` must be a non-empty sequence of distinct names from ``allowed``."""
    values = config[key]
    _check(isinstance(values, (list, tuple)) and len(values) > 0 and len(set(values)) == len(values)
           and all(v in allowed for v in values),
           f"config.{key}={values!r}: must be a non-empty tuple of distinct names from {', '.join(allowed)}")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def check_fraction(config, key: str) -> None:
    """``config[key]`` must be a number in [0, 1)."""
    value = config[key]
    _check(isinstance(value, (int, float)) and 0.0 <= value < 1.0, f"config.{key}={value!r}: must be in [0, 1)")


def check_choice(config, key: str, allowed) -> None:
    """``config[key]`` must be one of ``allowed``."""
    _check(config[key] in allowed, f"config.{key}={config[key]!r}: must be one of {', '.join(map(str, allowed))}")


def check_positive_int(config, key: str, minimum: int = 1) -> None:
    """``config[key]`` must be an int ≥ minimum."""
    value = config[key]
    _check(isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
           f"config.{key}={value!r}: must be an integer >= {minimum}")


def seed_ids(config) -> tuple[int, ...]:
    """The ids i of the seeds a run computes (seed i uses ``fold_in(key(seed), i)``): ``seed_ids``, else
    0..num_seeds-1."""
    return tuple(config.seed_ids) if config.seed_ids else tuple(range(config.num_seeds))


def resolve_seed_ids(config) -> None:
    """The CLI's reading of ``seed_ids``: a run of the named seeds alone, so ``num_seeds`` becomes their count."""
    ids = config.get("seed_ids")
    if isinstance(ids, (list, tuple)) and ids:
        config.num_seeds = len(ids)


def validate_common(config) -> None:
    """Check the shared keys (not the dataset's existence, which the data loader checks)."""
    from jaxprune import data, models, train  # local: keep `import jaxprune.config` light for config files

    check_choice(config, "dataset", data.DATASETS)
    check_choice(config, "model", models.NAMES)
    check_choice(config, "weight_init", models.WEIGHT_INITS)
    _check(config.weight_init == "kaiming_normal" or config.model in models.MLPS,
           f"config.weight_init={config.weight_init!r}: defined for the MLPs ({', '.join(models.MLPS)}), not "
           f"model={config.model!r}")
    check_choice(config, "optimizer", train.OPTIMIZERS)
    check_choice(config, "lr_schedule", train.LR_SCHEDULES)
    check_choice(config, "task", TASKS)
    check_choice(config, "labels", GAUSSIAN_LABELS)
    for key in ("num_seeds", "epochs", "batch_size", "eval_batch_size", "input_dim"):
        check_positive_int(config, key)
    for key in ("num_examples", "num_test", "warmup_epochs", "checkpoint_every_steps"):
        check_positive_int(config, key, minimum=0)
    check_positive_int(config, "num_classes", minimum=2)
    for key in ("seed", "data_seed"):
        check_positive_int(config, key, minimum=0)
    ids = config.seed_ids
    _check(isinstance(ids, (list, tuple)) and len(set(ids)) == len(ids)
           and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids),
           f"config.seed_ids={ids!r}: must be a tuple of distinct non-negative seed ids, e.g. (3,)")
    _check(not ids or len(ids) == config.num_seeds,
           f"config.seed_ids={tuple(ids)!r} names {len(ids)} seed(s) but config.num_seeds={config.num_seeds}; "
           "the command line sets num_seeds from seed_ids")
    check_fraction(config, "label_noise")
    data.check_input_noise(config.input_noise_var)
    for key in ("learning_rate", "noise_std"):
        _check(isinstance(config[key], (int, float)) and config[key] > 0, f"config.{key}={config[key]!r}: must be > 0")
    _check(0.0 <= config.momentum < 1.0, f"config.momentum={config.momentum!r}: must be in [0, 1)")
    _check(config.weight_decay >= 0.0, f"config.weight_decay={config.weight_decay!r}: must be >= 0")
    _check(len(config.widths) >= 1 and all(isinstance(w, int) and w >= 1 for w in config.widths),
           f"config.widths={tuple(config.widths)!r}: must be a non-empty tuple of positive integers")
    _check(isinstance(config.teacher_widths, (list, tuple))
           and all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in config.teacher_widths),
           f"config.teacher_widths={config.teacher_widths!r}: must be a tuple of positive integers (() = linear)")
    _check(isinstance(config.data_per_seed, bool), f"config.data_per_seed={config.data_per_seed!r}: must be a bool")
    if config.data_per_seed:
        data.check_per_seed(config)
