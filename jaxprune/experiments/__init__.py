"""Experiments by name: each module has ``validate(config)`` (raises ConfigError, writes nothing) and
``run(config, workdir) -> results`` (the dict ``jaxprune.main`` writes to results.json)."""
from jaxprune.experiments import autosparse, irp, mutual_information, pai

REGISTRY = {"irp": irp, "pai": pai, "mutual_information": mutual_information, "autosparse": autosparse}
