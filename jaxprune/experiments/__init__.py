"""Experiments by name: each module has ``validate(config)`` (raises ConfigError, writes nothing) and
``run(config, workdir) -> results`` (the dict ``jaxprune.main`` writes to results.json)."""
from jaxprune.experiments import irp, mutual_information

REGISTRY = {"irp": irp, "mutual_information": mutual_information}
