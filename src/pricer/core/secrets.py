"""What must never reach MLflow, traces, logs or reports: secret-named settings' values, passwords in URLs.

Pricer's configs hold no secret by construction (they name the environment variables that do), so
these guard what someone adds: a setting called ``api_key``, a ``base_url`` with ``user:password@``.
"""

from __future__ import annotations

import re

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
