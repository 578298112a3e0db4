"""One typed settings object for every finsent process.

Values come, lowest priority first, from defaults, a TOML config file,
environment variables (`FINSENT_` prefix, `__` between levels, e.g.
`FINSENT_KAFKA__BOOTSTRAP=broker:9092`) and CLI flags. Secrets are
`SecretStr` (masked in logs and dumps) and may be read from files so they
never sit in a config file or a process listing.
"""

from __future__ import annotations

import os
import ssl
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

from monitor.core.surge import SurgeConfig
from monitor.core.windows import WindowConfig
from monitor.model.batching import BUCKET_SIZE

_SURGE = SurgeConfig()  # the surge rule's defaults, defined once there
_WINDOWS = WindowConfig()  # likewise the windows'

# A source checkout (pyproject.toml beside monitor/) keeps the shipped bundle and var/ at its root.
# An installed finsent has no such root: its defaults are relative to the working directory, and
# a bundle elsewhere is named with --model or FINSENT_MODEL__PATH.
_PACKAGE_PARENT = Path(__file__).resolve().parent.parent
SOURCE_ROOT: Path | None = _PACKAGE_PARENT if (_PACKAGE_PARENT / "pyproject.toml").is_file() else None
HOME = SOURCE_ROOT or Path(".")
DEFAULT_BUNDLE = HOME / "models" / "finsent-minilm-l6"
# English items go to the English bundle (best on tweets, no regression), Chinese ones to the multilingual
# one (the only bundle that reads Chinese); see training/README.md for the comparison behind this choice.
DEFAULT_EXTRA_BUNDLES: tuple[Path, ...] = (SOURCE_ROOT / "models" / "finsent-multilingual",) if SOURCE_ROOT else ()
# Every section rejects keys it does not know: a misspelt key (`[surge] kk = 3`) silently
# ignored would leave the default in force while the operator believes it changed.
STRICT = ConfigDict(extra="forbid")


class ConfigError(ValueError):
    """A configuration that cannot work; the message is one line for the user."""


class KafkaSettings(BaseModel):
    model_config = STRICT

    bootstrap: str = "127.0.0.1:9092"
    # "embedded" turns on the workarounds the tansu broker needs (monitor/stream/broker.py);
    # against a real Kafka cluster keep "kafka".
    profile: Literal["kafka", "embedded"] = "kafka"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    sasl_password_file: Path | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_check_hostname: bool = True
    session_timeout_s: float | None = None  # None: profile default
    # How long the group waits for every member to rejoin a rebalance (None: Faust's 60 s).
    rebalance_timeout_s: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _check_security(self) -> KafkaSettings:
        if self.sasl_password is None and self.sasl_password_file is not None:
            try:
                secret = self.sasl_password_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(f"cannot read sasl_password_file {self.sasl_password_file}: {exc}") from exc
            self.sasl_password = SecretStr(secret)
        if self.security_protocol.startswith("SASL"):
            if not self.sasl_mechanism:
                self.sasl_mechanism = "PLAIN"
            if not self.sasl_username or self.sasl_password is None:
                raise ValueError(f"security_protocol {self.security_protocol} needs sasl_username and a password")
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            p = getattr(self, name)
            if p is not None and not Path(p).is_file():
                raise ValueError(f"{name} {p} does not exist")
        return self

    @property
    def embedded(self) -> bool:
        return self.profile == "embedded"

    @property
    def session_timeout(self) -> float:
        if self.session_timeout_s is not None:
            return self.session_timeout_s
        # tansu's JoinGroup waits half the session timeout: keep it short there.
        return 3.0 if self.embedded else 30.0

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.security_protocol.endswith("SSL"):
            return None
        ctx = ssl.create_default_context(cafile=str(self.ssl_cafile) if self.ssl_cafile else None)
        if self.ssl_certfile:
            ctx.load_cert_chain(str(self.ssl_certfile), str(self.ssl_keyfile) if self.ssl_keyfile else None)
        ctx.check_hostname = self.ssl_check_hostname
        return ctx

    def kafka_python_config(self) -> dict[str, Any]:
        """Keyword arguments shared by kafka-python producers, consumers and admin clients."""
        cfg: dict[str, Any] = {
            "bootstrap_servers": [s.strip() for s in self.bootstrap.split(",") if s.strip()],
            "security_protocol": self.security_protocol,
        }
        if self.security_protocol.startswith("SASL"):
            cfg["sasl_mechanism"] = self.sasl_mechanism
            cfg["sasl_plain_username"] = self.sasl_username
            cfg["sasl_plain_password"] = self.sasl_password.get_secret_value() if self.sasl_password else None
        ctx = self.ssl_context()
        if ctx is not None:
            cfg["ssl_context"] = ctx
        return cfg


class TopicSettings(BaseModel):
    model_config = STRICT

    inputs: list[str] = Field(default_factory=lambda: ["finsent.news", "finsent.comments"])
    scored: str = "finsent.scored"
    trends: str = "finsent.trends"
    alerts: str = "finsent.alerts"
    deadletter: str = "finsent.deadletter"
    # Internal repartition topic: one event per (item, dimension:key).
    trend_events: str = "finsent.trend-events"
    partitions: int = Field(4, ge=1, le=1024)
    replication_factor: int = Field(1, ge=1)

    @field_validator("inputs")
    @classmethod
    def _non_empty(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one input topic is needed")
        return v

    def all_topics(self) -> list[str]:
        return [*self.inputs, self.scored, self.trends, self.alerts, self.deadletter, self.trend_events]


class ModelSettings(BaseModel):
    model_config = STRICT

    path: Path = DEFAULT_BUNDLE
    # Further bundles: single-task ones, or ones for other languages. For each language and task, the
    # first bundle (path, then these in order) whose manifest declares the language serves it.
    extra: list[Path] = Field(default_factory=lambda: list(DEFAULT_EXTRA_BUNDLES))
    variant: Literal["auto", "int8", "fp32"] = "auto"
    providers: Literal["auto", "cpu", "cuda"] = "auto"
    # One onnxruntime thread per worker: on 2 cores shared with the broker it scored more items per
    # second, at less CPU per item, than onnxruntime's default of one per core (bench/README.md).
    # Scale out with more workers (partitions); 0 = onnxruntime's default, for a host with idle cores.
    intra_op_threads: int = Field(1, ge=0, description="onnxruntime threads per model call; 0 = one per core")
    batch_size: int = Field(32, ge=1, le=1024)
    max_wait_ms: float = Field(20.0, ge=0, le=10_000)
    # A batch is sorted by token count and run in chunks of this many texts, each padded
    # only to its own longest text (0 = one chunk). See bench/README.md for the measurement.
    bucket_size: int = Field(BUCKET_SIZE, ge=0, le=1024)
    # Check the bundle directory for a new version this often (hot swap).
    reload_interval_s: float = Field(5.0, ge=0)


class WindowSettings(BaseModel):
    model_config = STRICT

    size_s: float = Field(_WINDOWS.size_ms / 1000, gt=0)
    allowed_lateness_s: float = Field(_WINDOWS.allowed_lateness_ms / 1000, ge=0)
    idle_s: float = Field(5.0, gt=0, description="advance the watermark with wall time after this much quiet")
    evidence_size: int = Field(_WINDOWS.evidence_size, ge=1, le=20)
    tick_interval_s: float = Field(1.0, gt=0)

    def to_config(self) -> WindowConfig:
        """The pure windows' parameters (seconds become event-time milliseconds)."""
        return WindowConfig(
            size_ms=int(self.size_s * 1000),
            allowed_lateness_ms=int(self.allowed_lateness_s * 1000),
            evidence_size=self.evidence_size,
        )


class SurgeSettings(BaseModel):
    model_config = STRICT

    # Defaults come from monitor/core/surge.py SurgeConfig, the one place they are chosen
    # (python -m bench.alerts --tune; docs/ALERTS.md).
    k: float = Field(_SURGE.k, gt=0)
    min_volume: int = Field(_SURGE.min_volume, ge=1)
    min_share: float = Field(_SURGE.min_share, ge=0, le=1)
    alpha: float = Field(_SURGE.alpha, gt=0, le=1)
    warmup_windows: int = Field(_SURGE.warmup_windows, ge=0)
    resolve_k: float = Field(_SURGE.resolve_k, ge=0)
    resolve_windows: int = Field(_SURGE.resolve_windows, ge=1)
    cooldown_s: float = Field(_SURGE.cooldown_ms / 1000, ge=0)
    min_std: float = Field(_SURGE.min_std, gt=0)
    prior_mean: float = Field(_SURGE.prior_mean, ge=0, le=1)
    count_aware_std: bool = _SURGE.count_aware_std
    derive_share: float = Field(_SURGE.derive_share, gt=0, le=1)

    def to_config(self) -> SurgeConfig:
        """The pure rule's parameters (seconds become event-time milliseconds)."""
        fields = self.model_dump()
        fields["cooldown_ms"] = int(fields.pop("cooldown_s") * 1000)
        return SurgeConfig(**fields)


class MetricsSettings(BaseModel):
    model_config = STRICT

    enabled: bool = True
    # Loopback by default: exposing /metrics wider is an explicit decision.
    host: str = "127.0.0.1"
    port: int = Field(9464, ge=0, le=65535)
    # HTTPS for /metrics when it must cross a network nobody controls: the worker's certificate and key
    # (PEM), and optionally the CA whose certificates scrapers must present (mutual TLS).
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    tls_client_cafile: Path | None = None
    tls_client_auth_required: bool = False

    @model_validator(mode="after")
    def _check_tls(self) -> MetricsSettings:
        # Each combination refused here would start a server that checks less than it seems to: no TLS
        # without both cert and key, a client CA that is not enforced verifies nobody, and enforcing
        # without a CA file could only mean trusting every public CA.
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ValueError("tls_certfile and tls_keyfile go together: set both or neither")
        if self.tls_certfile is None and (self.tls_client_cafile is not None or self.tls_client_auth_required):
            raise ValueError("client certificates need TLS: set tls_certfile and tls_keyfile as well")
        if self.tls_client_auth_required and self.tls_client_cafile is None:
            raise ValueError("tls_client_auth_required needs tls_client_cafile (the CA of scrapers' certificates)")
        if self.tls_client_cafile is not None and not self.tls_client_auth_required:
            raise ValueError("tls_client_cafile is only used with tls_client_auth_required = true")
        for name in ("tls_certfile", "tls_keyfile", "tls_client_cafile"):
            p = getattr(self, name)
            if p is not None and not Path(p).is_file():
                raise ValueError(f"{name} {p} does not exist")
        return self

    @property
    def scheme(self) -> str:
        return "https" if self.tls_certfile is not None else "http"


class WorkerSettings(BaseModel):
    model_config = STRICT

    app_id: str = "finsent"
    datadir: Path = Path("var/faust")
    # Where the window table lives. "memory://": in memory, restored from its changelog; under
    # at-least-once a rebalance re-reads only what this worker does not hold yet (docs/BROKERS.md).
    store: str = "memory://"
    web_port: int = Field(6066, ge=0, le=65535)
    max_message_bytes: int = Field(1_000_000, ge=1024)
    watchlist: Path | None = None
    max_metric_entities: int = Field(50, ge=0)
    commit_interval_s: float = Field(2.0, gt=0)
    # How long a failed output send is retried before its input is dead-lettered instead.
    send_retry_s: float = Field(30.0, ge=0)
    # Write batch N's outputs while batch N+1 is scored (False: strictly one batch at a time).
    overlap_io: bool = True
    # "exactly_once": outputs and input offsets commit in one Kafka transaction per partition, and
    # consumers reading with isolation.level=read_committed see each output once (needs a broker with
    # transactions; not the embedded one). Default at-least-once: outputs may repeat after a crash.
    processing_guarantee: Literal["at_least_once", "exactly_once"] = "at_least_once"
    # Static group membership: a worker restarted under the same id takes its partitions back at once
    # instead of waiting for its old session to expire. Unique per worker process.
    group_instance_id: str | None = None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FINSENT_", env_nested_delimiter="__", extra="forbid")

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    windows: WindowSettings = Field(default_factory=WindowSettings)
    surge: SurgeSettings = Field(default_factory=SurgeSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="after")
    def _check_guarantee(self) -> Settings:
        if self.worker.processing_guarantee == "exactly_once" and self.kafka.embedded:
            raise ValueError(
                "worker.processing_guarantee exactly_once needs Kafka transactions, which the embedded broker "
                "lacks: use profile kafka against a broker that has them"
            )
        return self

    def redacted(self) -> dict[str, Any]:
        """A dump safe to log: secrets masked, paths as strings."""
        return self.model_dump(mode="json")


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {p} is a directory") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {p} is not valid TOML: {exc}") from None


def _leaf_depth(data: dict[str, Any], loc: tuple[int | str, ...]) -> int | None:
    """How many parts of `loc` lead to a value (not a section) in `data`; None when `data` lacks it.

    Lets an error name where the offending value came from; an error about a
    whole section (a model validator) has no single source and gets None.
    """
    node: Any = data
    depth = None
    for i, part in enumerate(loc):
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if not (in_dict or in_list):
            return None
        node = node[part]
        if depth is None and not isinstance(node, dict):
            depth = i + 1  # the env var / TOML key that holds the value (lists hold items below it)
    return depth


def _one_line(
    exc: ValidationError,
    *,
    overrides: dict[str, Any] | None = None,
    env: tuple[str, dict[str, Any]] | None = None,
    file: tuple[str, dict[str, Any]] | None = None,
) -> str:
    """Every validation error on one line, each naming the env var or file its value came from.

    An operator with a file, a dozen FINSENT_* variables and CLI flags needs
    to know which one to fix. The highest-priority source holding the value
    wins, as in the merge; values set by code or CLI flags and errors about a
    whole section (no single source) say "invalid settings".
    """
    parts = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        dotted = ".".join(str(x) for x in loc)
        msg = str(err["msg"]).removeprefix("Value error, ")
        what = f"unknown key {dotted}" if err["type"] == "extra_forbidden" else f"{dotted}: {msg}" if dotted else msg
        where = "invalid settings"
        if _leaf_depth(overrides or {}, loc) is None:
            if env is not None and (depth := _leaf_depth(env[1], loc)) is not None:
                where = "environment variable " + env[0] + "__".join(str(x) for x in loc[:depth]).upper()
            elif file is not None and _leaf_depth(file[1], loc) is not None:
                where = f"config file {file[0]}"
        parts.append(f"{where}: {what}")
    return "; ".join(parts)


def load_settings(
    config_file: str | os.PathLike[str] | None = None, overrides: dict[str, Any] | None = None
) -> Settings:
    """Defaults < config file < environment < overrides (CLI flags, nested dicts).

    The environment is read raw and merged before anything is validated, so a
    section split between the file and the environment (security protocol in
    FINSENT_KAFKA__*, user name in the file) is checked as a whole.
    """
    if config_file is None:
        config_file = os.environ.get("FINSENT_CONFIG") or None
    file_data = read_config_file(config_file) if config_file else {}
    prefix = str(Settings.model_config.get("env_prefix", ""))
    try:
        from_env = EnvSettingsSource(Settings)()
    except Exception as exc:  # pydantic-settings raises SettingsError on a malformed (e.g. JSON) value
        raise ConfigError(f"environment: {' '.join(str(exc).split())}") from None
    merged = _deep_merge(_deep_merge(file_data, from_env), overrides or {})
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(
            _one_line(exc, overrides=overrides, env=(prefix, from_env), file=(str(config_file), file_data))
        ) from None
