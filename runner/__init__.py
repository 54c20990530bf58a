"""Continuous retraining for notebook pipelines: the package behind the `retrain` command."""

__version__ = "0.1.0"
