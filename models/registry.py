"""One registry of model architectures: ``build_model(name, **config)``.

Each entry names a class and the constructor keywords a user may set. Unknown names or keys raise a
``ValueError`` that lists what is allowed, so typos never pass silently.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from models.botnet import BotNet50
from models.ldsenet import LDSENet
from models.resnet import ResNet50

MODELS: dict[str, Callable[..., nn.Module]] = {
    "ldsenet": LDSENet,
    "resnet50": ResNet50,
    "botnet": BotNet50,
}


def allowed_config(name: str) -> dict[str, Any]:
    """The configurable keywords of model ``name`` with their defaults."""
    factory = _factory(name)
    return {
        p.name: p.default
        for p in inspect.signature(factory).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def build_model(name: str, **config: Any) -> nn.Module:
    """Build model ``name`` ("ldsenet", "resnet50", "botnet") with constructor ``config``."""
    allowed = allowed_config(name)
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown} for model {name!r}; allowed: {sorted(allowed)}")
    return _factory(name)(**config)


def _factory(name: str) -> Callable[..., nn.Module]:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; allowed: {sorted(MODELS)}")
    return MODELS[name]
