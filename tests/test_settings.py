"""Settings precedence, validation errors as one line naming their source, unknown keys refused, secrets masked."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.settings import ConfigError, Settings, load_settings


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
        (
            {"kafka": {"profile": "embedded"}, "worker": {"processing_guarantee": "exactly_once"}},
            "needs Kafka transactions",
        ),
        ({"worker": {"processing_guarantee": "twice"}}, "processing_guarantee"),
        ({"kafka": {"rebalance_timeout_s": 0}}, "rebalance_timeout_s"),
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


@pytest.mark.parametrize(
    ("toml", "line"),
    [
        ("[surge]\nkk = 3\n", "config file {cfg}: unknown key surge.kk"),
        ("[kafka]\nbootstrapp = 'x'\n", "config file {cfg}: unknown key kafka.bootstrapp"),
        ("log_levl = 'DEBUG'\n", "config file {cfg}: unknown key log_levl"),
        ("[windows]\nsize_s = -1\n", "config file {cfg}: windows.size_s: Input should be greater than 0"),
    ],
)
def test_file_errors_name_the_file_and_dotted_key(tmp_path: Path, toml: str, line: str) -> None:
    """A misspelt key anywhere is an error, not a silently kept default."""
    cfg = tmp_path / "x.toml"
    cfg.write_text(toml)
    with pytest.raises(ConfigError) as exc:
        load_settings(cfg)
    assert str(exc.value) == line.format(cfg=cfg)


def test_env_errors_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FINSENT_SURGE__KK", "3")
    monkeypatch.setenv("FINSENT_WINDOWS__SIZE_S", "0")
    with pytest.raises(ConfigError) as exc:
        load_settings()
    assert str(exc.value) == (
        "environment variable FINSENT_WINDOWS__SIZE_S: windows.size_s: Input should be greater than 0; "
        "environment variable FINSENT_SURGE__KK: unknown key surge.kk"
    )


def test_other_finsent_variables_are_not_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """FINSENT_CONFIG, FINSENT_NOTIFY_FORWARD, ... share the prefix but are read elsewhere."""
    monkeypatch.setenv("FINSENT_NOTIFY_FORWARD", "http://127.0.0.1:1/hook")
    monkeypatch.setenv("FINSENT_DATASETS", "/data")
    assert load_settings().kafka.bootstrap == "127.0.0.1:9092"


def test_section_split_between_file_and_env_is_checked_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SASL protocol from the environment, credentials from the file: valid together."""
    cfg = tmp_path / "f.toml"
    cfg.write_text('[kafka]\nsasl_username = "svc"\nsasl_password = "pw"\n')
    monkeypatch.setenv("FINSENT_KAFKA__SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    s = load_settings(cfg)
    assert s.kafka.security_protocol == "SASL_PLAINTEXT" and s.kafka.sasl_username == "svc"


def test_config_from_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "f.toml"
    cfg.write_text("[surge]\nkk = 3\n")
    monkeypatch.setenv("FINSENT_CONFIG", str(cfg))
    with pytest.raises(ConfigError, match=r"config file .*f\.toml: unknown key surge\.kk"):
        load_settings()


def test_shipped_config_files_load() -> None:
    root = Path(__file__).resolve().parent.parent
    for cfg in (root / "config.example.toml", root / "deploy" / "finsent.toml"):
        load_settings(cfg)


def test_surge_settings_convert_to_the_pure_rule_with_its_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    from monitor.core.surge import SurgeConfig

    assert Settings().surge.to_config() == SurgeConfig()
    monkeypatch.setenv("FINSENT_SURGE__COOLDOWN_S", "1.5")
    monkeypatch.setenv("FINSENT_SURGE__COUNT_AWARE_STD", "false")
    cfg = load_settings().surge.to_config()
    assert cfg.cooldown_ms == 1500 and cfg.count_aware_std is False


def test_metrics_tls_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().metrics.scheme == "http" and load_settings().metrics.tls_certfile is None
    files = {}
    for name in ("CERTFILE", "KEYFILE", "CLIENT_CAFILE"):
        files[name] = tmp_path / f"{name.lower()}.pem"
        files[name].write_text("-")
        monkeypatch.setenv(f"FINSENT_METRICS__TLS_{name}", str(files[name]))
    monkeypatch.setenv("FINSENT_METRICS__TLS_CLIENT_AUTH_REQUIRED", "true")
    m = load_settings().metrics
    assert (m.tls_certfile, m.tls_keyfile, m.tls_client_cafile) == (
        files["CERTFILE"],
        files["KEYFILE"],
        files["CLIENT_CAFILE"],
    )
    assert m.tls_client_auth_required and m.scheme == "https"


@pytest.mark.parametrize(
    ("metrics", "fragment"),
    [
        ({"tls_certfile": "cert"}, "tls_certfile and tls_keyfile go together: set both or neither"),
        ({"tls_keyfile": "key"}, "tls_certfile and tls_keyfile go together: set both or neither"),
        ({"tls_certfile": "cert", "tls_keyfile": "missing"}, "tls_keyfile {dir}/missing does not exist"),
        ({"tls_certfile": "missing", "tls_keyfile": "key"}, "tls_certfile {dir}/missing does not exist"),
        ({"tls_client_cafile": "ca", "tls_client_auth_required": True}, "client certificates need TLS"),
        ({"tls_client_auth_required": True}, "client certificates need TLS"),
        ({"tls_certfile": "cert", "tls_keyfile": "key", "tls_client_auth_required": True},
         "tls_client_auth_required needs tls_client_cafile"),
        ({"tls_certfile": "cert", "tls_keyfile": "key", "tls_client_cafile": "ca"},
         "tls_client_cafile is only used with tls_client_auth_required = true"),
        ({"tls_certfile": "cert", "tls_keyfile": "key", "tls_client_cafile": "missing", "tls_client_auth_required": True},
         "tls_client_cafile {dir}/missing does not exist"),
    ],
)  # fmt: skip
def test_metrics_tls_that_would_check_less_than_asked_is_one_line(tmp_path: Path, metrics: dict, fragment: str) -> None:
    for name in ("cert", "key", "ca"):
        (tmp_path / name).write_text("-")
    values = {k: str(tmp_path / v) if isinstance(v, str) else v for k, v in metrics.items()}
    with pytest.raises(ConfigError) as exc:
        load_settings(None, {"metrics": values})
    assert str(exc.value).startswith("invalid settings: metrics: ")
    assert fragment.format(dir=tmp_path) in str(exc.value) and "\n" not in str(exc.value)


def test_settings_load_without_numpy_or_onnxruntime() -> None:
    """A bad flag or config file is reported before the model stack is imported, so the error comes at once."""
    code = "import sys, monitor.settings; print(sorted({'numpy', 'onnxruntime'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
