"""Defocus-regression networks (LDSE-NET and the ResNet-50 / BoTNet-50 baselines), datasets and training.

``build_model(name, **config)`` is the one way to make a model; see ``models.registry``.
"""

from models.registry import MODELS, allowed_config, build_model

__all__ = ["MODELS", "allowed_config", "build_model"]
