"""`finsent` command line: one entry point, one subcommand per job.

Every subcommand shares the settings flags (--config, --bootstrap, ...)
and reports bad arguments, files, settings or an unreachable broker as one
clear line with exit code 2, never a traceback or a usage block: the line
is what an operator reads first, and --help is one command away.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from monitor.cli.errors import EXIT_USAGE, CliError, kafka_unreachable, reader_gone, stdout_reader_gone
from monitor.cli.parsing import OneLineParser
from monitor.feed.rows import FeedError
from monitor.settings import ConfigError, Settings, load_settings
from monitor.stream.clients import KafkaClientError, is_unreachable

# Client libraries whose loggers are silenced below CRITICAL unless --log-level DEBUG. kafka-python
# only serves short-lived clients here (admin, tail, replay, notify) that report a failure as one
# line themselves; its own log would be 25 lines of reconnect attempts before that line. aiokafka
# (inside the worker, after start-up) stays at WARNING: a running worker losing its broker must say so.
QUIET_LOGGERS = {"kafka": logging.CRITICAL, "aiokafka": logging.WARNING}


def quiet_client_logs(settings: Settings) -> None:
    """Silence the Kafka client libraries (see QUIET_LOGGERS) unless the operator asked for DEBUG."""
    if settings.log_level != "DEBUG":
        for name, level in QUIET_LOGGERS.items():
            logging.getLogger(name).setLevel(level)


def _common(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("settings (override config file and FINSENT_* environment)")
    g.add_argument("--config", metavar="FILE", help="TOML config file (also FINSENT_CONFIG)")
    g.add_argument("--bootstrap", metavar="HOST:PORT", help="Kafka bootstrap servers (FINSENT_KAFKA__BOOTSTRAP)")
    g.add_argument(
        "--profile", choices=["kafka", "embedded"], help="broker profile: 'embedded' enables tansu workarounds"
    )
    g.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def settings_from_args(args: argparse.Namespace) -> Settings:
    over: dict[str, Any] = {}
    if getattr(args, "bootstrap", None):
        over.setdefault("kafka", {})["bootstrap"] = args.bootstrap
    if getattr(args, "profile", None):
        over.setdefault("kafka", {})["profile"] = args.profile
    if getattr(args, "log_level", None):
        over["log_level"] = args.log_level
    extra: Callable[[argparse.Namespace], dict[str, Any]] | None = getattr(args, "settings_overrides", None)
    if extra is not None:
        for section, values in extra(args).items():
            if isinstance(values, dict):
                over.setdefault(section, {}).update(values)
            else:
                over[section] = values
    return load_settings(getattr(args, "config", None), over)


def build_parser() -> argparse.ArgumentParser:
    from monitor.cli import demo, notify, replay, tail
    from monitor.cli import worker as worker_cli

    parser = OneLineParser(
        prog="finsent",
        description=(
            "finsent: streaming financial sentiment and opinion monitor. Reads news and comment "
            "streams from Kafka, scores topic and sentiment with an ONNX model, aggregates trends "
            "per topic and company, and alerts on negative surges."
        ),
        epilog="Run 'finsent demo' for a self-contained demo; 'finsent COMMAND --help' for details.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=OneLineParser)
    for module in (worker_cli, demo, replay, tail, notify):
        p = module.add_parser(sub)
        _common(p)
    return parser


def _error(message: object) -> int:
    print(f"finsent: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    settings: Settings | None = None
    try:
        settings = settings_from_args(args)
        logging.basicConfig(
            level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
        )
        quiet_client_logs(settings)
        rc: int = args.func(args, settings)
        return rc
    except (ConfigError, CliError, FeedError, KafkaClientError) as exc:
        # A command may wrap a connection failure in its own words; the operator gets the same line everywhere.
        if settings is not None and is_unreachable(exc):
            return _error(kafka_unreachable(settings))
        return _error(exc)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        if not stdout_reader_gone():
            raise
        return reader_gone()
    except Exception as exc:
        if settings is not None and is_unreachable(exc):
            return _error(kafka_unreachable(settings))
        raise
