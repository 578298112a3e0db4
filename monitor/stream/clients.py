"""Kafka clients for everything around the stream: topic admin, producers, connection errors.

The worker consumes through Faust (aiokafka); the tools (replay, tail,
notify, the worker's start-up check) use short-lived kafka-python clients.
Both are configured from the same `KafkaSettings`, here, so that security
settings, timeouts and the embedded broker's limits are applied in one place.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable
from typing import Any

from monitor.settings import Settings


class KafkaClientError(Exception):
    """A Kafka operation a tool needs failed; the message is one line for the operator."""


# Fail fast with one line when no broker answers (kafka-python's default waits 30 s).
BOOTSTRAP_TIMEOUT_MS = 10_000


def client_config(settings: Settings) -> dict[str, Any]:
    cfg = {k: v for k, v in settings.kafka.kafka_python_config().items() if k != "bootstrap_servers"}
    return {**cfg, "bootstrap_timeout_ms": BOOTSTRAP_TIMEOUT_MS}


def ensure_topic(settings: Settings, topic: str) -> bool:
    """Create the topic if it is missing (True when created).

    tansu auto-creates unknown topics with 4 partitions and a real cluster
    may refuse to: creating it here, with the configured partition count,
    gives both the same, predictable layout.
    """
    try:
        created = create_topics(
            settings.kafka.bootstrap,
            [topic],
            settings.topics.partitions,
            settings.topics.replication_factor,
            **client_config(settings),
        )
    except Exception as exc:
        raise KafkaClientError(
            f"cannot reach Kafka at {settings.kafka.bootstrap} or create topic {topic}: {exc}"
        ) from None
    return bool(created)


def make_producer(settings: Settings) -> Any:
    """A kafka-python producer; on the embedded broker without idempotence (tansu lacks it)."""
    from kafka import KafkaProducer

    extra: dict[str, Any] = {
        "linger_ms": 5,
        "max_block_ms": 15_000,
        "allow_auto_create_topics": False,
        "bootstrap_timeout_ms": BOOTSTRAP_TIMEOUT_MS,
    }
    if settings.kafka.embedded:
        extra.update(enable_idempotence=False, acks=1)
    try:
        return KafkaProducer(**settings.kafka.kafka_python_config(), **extra)
    except Exception as exc:
        raise KafkaClientError(f"cannot connect to Kafka at {settings.kafka.bootstrap}: {exc}") from None


def create_topics(
    bootstrap: str,
    names: Iterable[str],
    partitions: int = 4,
    replication_factor: int = 1,
    configs: dict[str, str] | None = None,
    **client_cfg: object,
) -> list[str]:
    """Create the topics that do not exist yet (with topic `configs`, if any); returns the ones created."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","), request_timeout_ms=10000, **client_cfg)
    try:
        existing = set(admin.list_topics())
        wanted = [n for n in dict.fromkeys(names) if n not in existing]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(
                    [NewTopic(n, partitions, replication_factor, topic_configs=configs or {}) for n in wanted]
                )
        return wanted
    finally:
        admin.close()


def faust_broker_kwargs(settings: Settings) -> dict[str, Any]:
    import faust

    k = settings.kafka
    urls = ";".join(f"kafka://{h.strip()}" for h in k.bootstrap.split(",") if h.strip())
    kw: dict[str, Any] = {"broker": urls}
    if k.security_protocol.startswith("SASL"):
        assert k.sasl_password is not None
        kw["broker_credentials"] = faust.SASLCredentials(
            username=k.sasl_username,
            password=k.sasl_password.get_secret_value(),
            mechanism=k.sasl_mechanism,
            ssl_context=k.ssl_context(),
        )
    elif k.security_protocol == "SSL":
        kw["broker_credentials"] = faust.SSLCredentials(k.ssl_context())
    session = k.session_timeout
    kw["broker_session_timeout"] = session
    kw["broker_heartbeat_interval"] = max(0.2, session / 4)
    if k.rebalance_timeout_s is not None:
        kw["broker_rebalance_timeout"] = k.rebalance_timeout_s
    return kw


def is_unreachable(exc: BaseException) -> bool:
    """Whether `exc`, or an exception it was raised from or while handling, means no broker answered.

    Covers kafka-python (NoBrokersAvailable, KafkaConnectionError, a bootstrap
    KafkaTimeoutError) and aiokafka (KafkaConnectionError). Looks the classes
    up in sys.modules: a library that was never imported raised nothing, and
    the check must not import Kafka clients into commands that do not use them.
    """
    kinds: list[type[BaseException]] = []
    bootstrap_timeouts: list[type[BaseException]] = []
    for module in ("kafka.errors", "aiokafka.errors"):
        errors = sys.modules.get(module)
        if errors is not None:
            kinds += [
                c for c in (getattr(errors, n, None) for n in ("NoBrokersAvailable", "KafkaConnectionError")) if c
            ]
            if (timeout := getattr(errors, "KafkaTimeoutError", None)) is not None:
                bootstrap_timeouts.append(timeout)
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, tuple(kinds)):
            return True
        if isinstance(e, tuple(bootstrap_timeouts)) and "bootstrap" in str(e).lower():
            return True
        e = e.__cause__ or e.__context__
    return False
