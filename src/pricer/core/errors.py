"""The one error family: what a user can fix (a file, a setting, a key) is a ``PricerError``.

The CLI prints a ``PricerError`` as one line and exits with code 2 (``-v`` adds the traceback);
any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class PricerError(Exception):
    """A failure the user can act on; its message names what to fix."""


class ConfigError(PricerError, ValueError):
    """A configuration file or setting that cannot be used; the message names each bad field."""


class SourceError(PricerError):
    """A data source that cannot be read at all (a missing file, an unreachable hub)."""


class DataError(PricerError, ValueError):
    """Data that cannot be used as it is: a missing or empty split, a file with no usable item."""


class ModelNotFound(PricerError):
    """A registered model, version or alias that the registry does not hold."""


class RemoteAPIError(PricerError):
    """A remote service (a model API, a notifier) that cannot be used."""
