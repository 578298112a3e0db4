"""argparse that reports a bad argument as one line, for every finsent command (and finsent-train)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import NoReturn

from monitor.cli.errors import EXIT_USAGE


class OneLineParser(argparse.ArgumentParser):
    """argparse with one-line errors: `PROG: error: MESSAGE (see PROG --help)`, exit code 2.

    argparse's default prints the whole usage block (13 lines for replay)
    above the message, which pushes the message out of sight. Subparsers
    inherit the class (add_subparsers uses the parent's type), so a bad
    value names the subcommand: "finsent replay: error: argument --rate: ...".
    """

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        ns, extras = super().parse_known_args(args, namespace)
        # The innermost parser (the subcommand's) finishes first: remember it for parse_args below.
        if not hasattr(ns, "_prog"):
            ns._prog = self.prog
        return ns, extras

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        """Like argparse's, but an unrecognised argument points at the subcommand's --help."""
        ns, extras = self.parse_known_args(args, namespace)
        if extras:
            prog = getattr(ns, "_prog", self.prog)
            self.exit(EXIT_USAGE, f"{prog}: error: unrecognized arguments: {' '.join(extras)} (see {prog} --help)\n")
        return ns
