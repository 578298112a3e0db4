"""`finsent worker`: run one stream-processing worker."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from monitor.cli.errors import CliError, kafka_unreachable
from monitor.model.bundle import BundleError
from monitor.settings import Settings
from monitor.stream.clients import BOOTSTRAP_TIMEOUT_MS, is_unreachable
from monitor.stream.clients import create_topics as make_topics

log = logging.getLogger(__name__)


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "worker",
        help="run a stream worker (scores, aggregates, alerts)",
        description=(
            "Consume the news and comment topics, score every item with the model bundle, write scored "
            "items, trend windows and surge alerts to Kafka, and serve Prometheus metrics. Start several "
            "workers with the same app id to share the partitions."
        ),
    )
    p.add_argument(
        "--model",
        metavar="DIR",
        action="append",
        help="model bundle directory; repeat for single-task bundles or bundles for other languages (each "
        "language and task is served by the first bundle declaring it)",
    )
    p.add_argument("--variant", choices=["auto", "int8", "fp32"], help="which ONNX file of the bundle to serve")
    p.add_argument("--metrics-port", type=int, help="Prometheus /metrics port (0 = disabled)")
    p.add_argument("--metrics-host", help="bind address for /metrics (default 127.0.0.1)")
    p.add_argument(
        "--metrics-tls-cert",
        metavar="PEM",
        help="serve /metrics over HTTPS with this certificate, with --metrics-tls-key (FINSENT_METRICS__TLS_CERTFILE)",
    )
    p.add_argument(
        "--metrics-tls-key", metavar="PEM", help="private key of --metrics-tls-cert (FINSENT_METRICS__TLS_KEYFILE)"
    )
    p.add_argument(
        "--metrics-client-ca",
        metavar="PEM",
        help="require scrapers to present a certificate signed by this CA: mutual TLS, needs --metrics-tls-cert "
        "(FINSENT_METRICS__TLS_CLIENT_CAFILE and FINSENT_METRICS__TLS_CLIENT_AUTH_REQUIRED=true)",
    )
    p.add_argument("--web-port", type=int, help="Faust's internal web port (loopback)")
    p.add_argument("--datadir", help="directory for table state")
    p.add_argument("--app-id", help="consumer group / application id")
    p.add_argument(
        "--exactly-once",
        action="store_true",
        help="commit outputs and input offsets in one Kafka transaction per partition; consumers must read with "
        "isolation.level=read_committed; needs a broker with transactions (FINSENT_WORKER__PROCESSING_GUARANTEE)",
    )
    p.add_argument(
        "--instance-id",
        metavar="ID",
        help="static group membership: a restarted worker with the same id takes its partitions back without a "
        "rebalance; unique per worker (FINSENT_WORKER__GROUP_INSTANCE_ID)",
    )
    p.add_argument("--window", type=float, metavar="SECONDS", help="tumbling window size")
    p.add_argument("--batch-size", type=int, help="max items per scoring micro-batch")
    p.add_argument("--no-create-topics", action="store_true", help="do not create missing topics at start")
    p.set_defaults(func=run, settings_overrides=overrides)
    return p


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    o: dict[str, dict[str, Any]] = {"model": {}, "metrics": {}, "worker": {}, "windows": {}}
    if args.model:  # on the command line, the bundles named are all the bundles served
        o["model"]["path"] = args.model[0]
        o["model"]["extra"] = args.model[1:]
    if args.variant:
        o["model"]["variant"] = args.variant
    if args.batch_size is not None:  # 0 must reach validation, not mean 'unset'
        o["model"]["batch_size"] = args.batch_size
    if args.metrics_port is not None:
        o["metrics"]["port"] = args.metrics_port
        o["metrics"]["enabled"] = args.metrics_port != 0
    if args.metrics_host:
        o["metrics"]["host"] = args.metrics_host
    if args.metrics_tls_cert:
        o["metrics"]["tls_certfile"] = args.metrics_tls_cert
    if args.metrics_tls_key:
        o["metrics"]["tls_keyfile"] = args.metrics_tls_key
    if args.metrics_client_ca:
        o["metrics"].update(tls_client_cafile=args.metrics_client_ca, tls_client_auth_required=True)
    if args.web_port is not None:
        o["worker"]["web_port"] = args.web_port
    if args.datadir:
        o["worker"]["datadir"] = args.datadir
    if args.app_id:
        o["worker"]["app_id"] = args.app_id
    if args.exactly_once:
        o["worker"]["processing_guarantee"] = "exactly_once"
    if args.instance_id:
        o["worker"]["group_instance_id"] = args.instance_id
    if args.window is not None:
        o["windows"]["size_s"] = args.window
    return {k: v for k, v in o.items() if v}


def run(args: argparse.Namespace, settings: Settings) -> int:
    return run_worker(settings, create_topics=not args.no_create_topics)


def check_kafka(settings: Settings, create_topics: bool = True) -> None:
    """Reach the broker before Faust starts, creating missing topics unless told not to.

    Faust reports an unreachable broker as a logged traceback and exit code 1;
    checking first with kafka-python (bounded by BOOTSTRAP_TIMEOUT_MS) gives
    the one-line error every other command gives. With `create_topics` False
    the check creates nothing: it only lists the topics.
    """

    client_cfg = {k: v for k, v in settings.kafka.kafka_python_config().items() if k != "bootstrap_servers"}
    try:
        make_topics(
            settings.kafka.bootstrap,
            settings.topics.all_topics() if create_topics else [],
            settings.topics.partitions,
            settings.topics.replication_factor,
            bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
            **client_cfg,
        )
    except Exception as exc:
        if is_unreachable(exc):
            raise kafka_unreachable(settings) from None
        doing = "create topics" if create_topics else "list topics"
        raise CliError(f"cannot {doing} on Kafka at {settings.kafka.bootstrap}: {exc}") from None


def run_worker(settings: Settings, create_topics: bool = True) -> int:
    import faust
    from faust.sensors.prometheus import setup_prometheus_sensors

    from monitor.model.service import ModelService
    from monitor.stream.app import Pipeline, create_app
    from monitor.stream.exposition import metrics_url, serve_metrics
    from monitor.stream.metrics import Metrics

    log.debug("settings: %s", settings.redacted())
    try:
        models = ModelService(
            [settings.model.path, *settings.model.extra],
            variant=settings.model.variant,
            providers=settings.model.providers,
            threads=settings.model.intra_op_threads,
            bucket_size=settings.model.bucket_size,
        )
    except BundleError as exc:
        hint = "" if Path(settings.model.path).is_dir() else " (name one with --model DIR or FINSENT_MODEL__PATH)"
        raise CliError(f"cannot load model bundle: {exc}{hint}") from None
    metrics = Metrics()
    pipeline = Pipeline(settings, models, metrics)
    check_kafka(settings, create_topics)
    datadir = Path(settings.worker.datadir)
    try:
        # Faust creates only the last level; a fresh checkout has no var/ for the default var/faust.
        datadir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot create the worker's datadir {datadir}: {exc.strerror or exc}") from None
    app = create_app(settings, pipeline)
    setup_prometheus_sensors(app, registry=metrics.registry, name_prefix="faust")
    if settings.metrics.enabled:
        m = settings.metrics
        try:
            server, _ = serve_metrics(m, metrics.registry)
        except OSError as exc:  # address taken, or a certificate/key/CA that does not load
            raise CliError(f"cannot serve metrics on {m.host}:{m.port}: {exc}") from None
        client = " (client certificate required)" if m.tls_client_auth_required else ""
        log.info("metrics on %s%s", metrics_url(m, server.server_port), client)
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True, override_logging=False)
    worker.execute_from_commandline()
    return 0
