"""Settings precedence, validation errors as one line, secrets masked."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from monitor.settings import ConfigError, load_settings


def test_precedence_defaults_file_env_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "f.toml"
    cfg.write_text('[kafka]\nbootstrap = "file:1"\n[windows]\nsize_s = 30\n[surge]\nk = 4.0\n')
    monkeypatch.setenv("FINSENT_WINDOWS__SIZE_S", "20")
    s = load_settings(cfg, {"surge": {"k": 5.0}})
    assert s.kafka.bootstrap == "file:1"  # file beats default
    assert s.windows.size_s == 20  # env beats file
    assert s.surge.k == 5.0  # CLI beats file
    assert s.topics.inputs == ["finsent.news", "finsent.comments"]


def test_list_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FINSENT_TOPICS__INPUTS", '["a", "b", "c"]')
    assert load_settings().topics.inputs == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"windows": {"size_s": -1}}, "windows.size_s"),
        ({"kafka": {"security_protocol": "SASL_SSL"}}, "needs sasl_username"),
        ({"kafka": {"ssl_cafile": "/nonexistent/ca.pem", "security_protocol": "SSL"}}, "does not exist"),
        ({"nonsense": 1}, "nonsense"),
    ],
)
def test_bad_values_give_one_line(overrides: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(None, overrides)
    assert fragment in str(exc.value)
    assert "\n" not in str(exc.value)


def test_bad_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[kafka\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad)


def test_secrets_masked_and_read_from_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cr3t-value\n")
    s = load_settings(
        None,
        {
            "kafka": {
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": "SCRAM-SHA-512",
                "sasl_username": "svc",
                "sasl_password_file": str(secret),
            }
        },
    )
    assert s.kafka.kafka_python_config()["sasl_plain_password"] == "s3cr3t-value"
    with caplog.at_level(logging.INFO):
        logging.getLogger("t").info("settings: %s", s.redacted())
    dumped = json.dumps(s.redacted()) + repr(s) + str(s) + caplog.text
    assert "s3cr3t-value" not in dumped


def test_embedded_profile_shortens_session() -> None:
    assert load_settings(None, {"kafka": {"profile": "embedded"}}).kafka.session_timeout <= 6
    assert load_settings().kafka.session_timeout >= 10
    assert load_settings().metrics.host == "127.0.0.1"
