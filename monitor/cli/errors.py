"""The one kind of error a command reports to its user: one line, exit code 2."""

from __future__ import annotations

import os
import select
import sys

from monitor.settings import Settings

EXIT_USAGE = 2
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a filter whose reader left
KAFKA_HINT = "is the broker running? (--bootstrap / FINSENT_KAFKA__BOOTSTRAP)"


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def kafka_unreachable(settings: Settings) -> CliError:
    """The one line for "no broker answered", the same from every command."""
    return CliError(f"cannot reach Kafka at {settings.kafka.bootstrap}; {KAFKA_HINT}")


def stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reader has closed it (poll reports an error on its write end).

    A BrokenPipeError can also come from a socket; only this one means the user is done reading.
    """
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), 0)  # errors and hang-ups are always reported
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no fileno (captured), or no poll on this platform
        return False


def reader_gone() -> int:
    """The exit for a command whose stdout reader went away (`finsent tail | head`): quiet, like a Unix filter.

    stdout is pointed at /dev/null so that the interpreter's final flush of the buffered rest cannot raise a
    second BrokenPipeError (and a traceback) on the way out.
    """
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_BROKEN_PIPE
