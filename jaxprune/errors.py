"""Errors a user can fix by changing their input; ``jaxprune.main`` prints them as one line and exits 2."""


class ConfigError(ValueError):
    """A config value, path or dataset the run cannot use. The message names the key and what is allowed."""


class AllSeedsFailed(RuntimeError):
    """Every seed of a sweep hit a non-finite loss; there is no result to report."""
