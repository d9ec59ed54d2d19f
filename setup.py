"""Shim for tools that still call ``setup.py`` (legacy editable installs); the metadata is in pyproject.toml."""
from setuptools import setup

setup()
