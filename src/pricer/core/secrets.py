"""What must never reach MLflow, traces, logs or reports: secret-named settings' values, passwords in URLs.

Pricer's configs hold no secret by construction (they name the environment variables that do), so
these guard what someone adds: a setting called ``api_key``, a ``base_url`` with ``user:password@``.
"""

from __future__ import annotations

import os
import re

from pricer.core.errors import ConfigError

REDACTED = "<redacted>"
# Names of settings whose value would be the secret itself; ``max_tokens`` or ``token_env`` are not.
_SECRET_NAMES = frozenset({"api_key", "apikey", "key", "token", "access_token", "auth_token", "bearer", "secret",
                           "client_secret", "password", "passwd", "authorization", "credentials"})
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^/@\s:]*):([^/@\s]*)@")


def is_secret_name(name: str) -> bool:
    """Whether a setting's (last dotted) name says it holds a secret itself."""
    last = name.rsplit(".", 1)[-1].lower()
    return last in _SECRET_NAMES or last.endswith(("_secret", "_password", "_api_key"))


def without_credentials(text: str) -> str:
    """``https://user:pass@host/...`` -> ``https://user:<redacted>@host/...``, wherever a URL stands in ``text``."""
    return _URL_CREDENTIALS.sub(rf"\1\2:{REDACTED}@", text)


def secret_from_env(setting: str, variable: str | None) -> str | None:
    """The secret held by the environment variable a setting names (``service.token_env``), None when it
    names none; a named variable that is unset or empty is a config error, not an open door."""
    if variable is None:
        return None
    value = os.environ.get(variable, "")
    if not value:
        field = setting.rsplit(".", 1)[-1]
        raise ConfigError(f"{setting} names {variable}, which is not set: set it, or set {field}: null")
    return value
