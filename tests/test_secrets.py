"""What reaches MLflow: every setting, by name, and never a secret's value."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pricer.core.config import validate
from pricer.core.errors import ConfigError
from pricer.frontier.config import FrontierConfig
from pricer.tracking.runs import stage_run

PASSWORD = "pw-PLANTED-31337"
API_KEY = "sk-PLANTED-271828"
REDACTED = "<redacted>"


@pytest.mark.parametrize("name", ["max_tokens", "curate.max_tokens", "tokenizer", "api_key_env", "token_env",
                                  "key_neighbours", "keyword"])
def test_settings_that_merely_mention_keys_or_tokens_are_not_secrets(name: str) -> None:
    from pricer.core.secrets import is_secret_name

    assert not is_secret_name(name)


@pytest.mark.parametrize("name", ["api_key", "frontier.api_key", "token", "password", "client_secret",
                                  "pushover_api_key", "Authorization"])
def test_settings_that_hold_a_secret_are(name: str) -> None:
    from pricer.core.secrets import is_secret_name

    assert is_secret_name(name)


def test_a_password_in_a_url_is_blanked_wherever_it_stands() -> None:
    from pricer.core.secrets import without_credentials

    text = f"calling https://bob:{PASSWORD}@api.example.com/v1 and http://plain.example.com/"
    assert without_credentials(text) == (f"calling https://bob:{REDACTED}@api.example.com/v1 and "
                                          "http://plain.example.com/")


def test_every_setting_reaches_mlflow_and_no_secret_does(mlflow_uri: str, tmp_path: Path) -> None:
    params = {
        "curate": {"max_tokens": 160, "tokenizer": {"kind": "gemma", "max_tokens": 160}},
        "frontier": {"max_tokens": 8, "api_key_env": "OPENAI_API_KEY", "api_key": API_KEY,
                     "base_url": f"https://bob:{PASSWORD}@api.example.com/v1"},
    }
    with stage_run("test", params) as run:
        run_id = run.info.run_id
    logged = MlflowClient(mlflow_uri).get_run(run_id).data.params
    assert logged["curate.max_tokens"] == "160" and logged["curate.tokenizer.max_tokens"] == "160"
    assert logged["frontier.max_tokens"] == "8" and logged["frontier.api_key_env"] == "OPENAI_API_KEY"
    assert logged["frontier.api_key"] == REDACTED
    assert logged["frontier.base_url"] == f"https://bob:{REDACTED}@api.example.com/v1"
    store = b"".join(path.read_bytes() for path in (tmp_path / "mlruns").rglob("*") if path.is_file())
    assert PASSWORD.encode() not in store and API_KEY.encode() not in store


def test_a_frontier_url_with_a_password_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigError, match="user:password") as raised:
        validate(FrontierConfig, {"name": "f", "model": "m", "base_url": f"https://bob:{PASSWORD}@api.example.com"},
                 "frontier")
    assert PASSWORD not in str(raised.value)
