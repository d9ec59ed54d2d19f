"""jaxprune: pruning at initialization vs iterative pruning, as pure JAX functions on pytrees."""
__version__ = "0.1.0"
