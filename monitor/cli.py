"""`finsent` command line: one entry point, one subcommand per job.

Every subcommand shares the settings flags (--config, --bootstrap, ...)
and reports bad arguments or files as one clear line with exit code 2,
never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from monitor.settings import ConfigError, Settings, load_settings

EXIT_USAGE = 2


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


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
    from monitor import demo, notify, replay, tail, worker_cli

    parser = argparse.ArgumentParser(
        prog="finsent",
        description=(
            "finsent: streaming financial sentiment and opinion monitor. Reads news and comment "
            "streams from Kafka, scores topic and sentiment with an ONNX model, aggregates trends "
            "per topic and company, and alerts on negative surges."
        ),
        epilog="Run 'finsent demo' for a self-contained demo; 'finsent COMMAND --help' for details.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (worker_cli, demo, replay, tail, notify):
        p = module.add_parser(sub)
        _common(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
        logging.basicConfig(
            level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
        )
        if settings.log_level != "DEBUG":
            # Client libraries log every connection and rebalance at INFO: noise for an operator.
            for noisy in ("kafka", "aiokafka"):
                logging.getLogger(noisy).setLevel(logging.WARNING)
        rc: int = args.func(args, settings)
        return rc
    except (ConfigError, CliError) as exc:
        print(f"finsent: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
