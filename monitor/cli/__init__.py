"""`finsent` command line: one entry point (`main`), one module per subcommand."""

from monitor.cli.errors import EXIT_USAGE, CliError
from monitor.cli.main import main

__all__ = ["EXIT_USAGE", "CliError", "main"]
