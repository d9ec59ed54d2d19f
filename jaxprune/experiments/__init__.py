"""Experiments by name: each module has ``validate(config)`` (raises ConfigError, writes nothing) and
``run(config, workdir) -> results`` (the dict ``jaxprune.main`` writes to results.json)."""
from jaxprune.experiments import (
    autosparse,
    irp,
    memorization,
    mutual_information,
    noise_correlation,
    noise_correlation_curve,
    pai,
    toy_mutual_information,
)

REGISTRY = {
    "irp": irp,
    "pai": pai,
    "memorization": memorization,
    "noise_correlation": noise_correlation,
    "noise_correlation_curve": noise_correlation_curve,
    "mutual_information": mutual_information,
    "autosparse": autosparse,
    "toy_mutual_information": toy_mutual_information,
}
