"""The one kind of error a command reports to its user: one line, exit code 2."""

from __future__ import annotations

from monitor.settings import Settings

EXIT_USAGE = 2
KAFKA_HINT = "is the broker running? (--bootstrap / FINSENT_KAFKA__BOOTSTRAP)"


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def kafka_unreachable(settings: Settings) -> CliError:
    """The one line for "no broker answered", the same from every command."""
    return CliError(f"cannot reach Kafka at {settings.kafka.bootstrap}; {KAFKA_HINT}")
