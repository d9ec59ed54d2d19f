"""Experiments by name: each module has ``validate(config)`` (raises ConfigError, writes nothing) and
``run(config, workdir) -> results`` (the dict ``jaxprune.main`` writes to results.json)."""
from jaxprune.experiments import irp

REGISTRY = {"irp": irp}
