"""Input errors of the ``models`` package.

``models`` may not import ``drivers`` (imports flow one way), so its errors are plain
``ValueError`` subclasses; the service maps them to HTTP 422 and the CLI prints them.
"""

from __future__ import annotations

__all__ = ["DatasetError", "ModelInputError"]


class DatasetError(ValueError):
    """A dataset on disk (or an import source) is missing, corrupt or inconsistent.

    The message names the file or field that is wrong and what is allowed.
    """


class ModelInputError(ValueError):
    """An array handed to a model-side function has the wrong shape, dtype or value range."""
