"""What every command-line tool shares: an argument parser with --debug, and the one way out for user errors.

    parser = ToolArgumentParser(description=__doc__)
    ...
    if __name__ == "__main__":
        sys.exit(run_tool(main))

A user error (resdet/errors.py) ends the tool with `error: <message>` on stderr and exit status 2; with
--debug or RESDET_DEBUG=1 it is raised, traceback included. Any other exception is a bug and keeps its traceback.
"""
import argparse
import os
import sys
from typing import Any, Callable, Container, List, Optional, Sequence

from ..errors import error_message, is_user_error

DEBUG_ENV = "RESDET_DEBUG"
EXIT_USER_ERROR = 2

# --debug of the last parsed command line; run_tool reads it (the parser runs inside main, before the error).
_debug_flag = False


class ToolArgumentParser(argparse.ArgumentParser):
    """argparse with --debug, and a clear error for an option written after the trailing KEY VALUE overrides."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)
        self.add_argument("--debug", action="store_true",
                          help=f"show the traceback of a user error (or set {DEBUG_ENV}=1)")

    def parse_args(self, args: Optional[Sequence[str]] = None, namespace=None) -> argparse.Namespace:
        return self._checked(super().parse_args(args, namespace))

    def parse_intermixed_args(self, args: Optional[Sequence[str]] = None, namespace=None) -> argparse.Namespace:
        return self._checked(super().parse_intermixed_args(args, namespace))

    def _checked(self, namespace: argparse.Namespace) -> argparse.Namespace:
        global _debug_flag
        _debug_flag = bool(getattr(namespace, "debug", False))
        misplaced = misplaced_options(getattr(namespace, "opts", None) or [], self._option_string_actions)
        if misplaced:
            self.error(f"{misplaced} comes after the KEY VALUE overrides, where it would be read as a config key; "
                       f"write options first: ... {misplaced} KEY VALUE ...")
        return namespace


def misplaced_options(overrides: Sequence[str], option_strings: Container[str]) -> Optional[str]:
    """The first override that is one of the parser's options (`--resume`, `--num-gpus=2`), or None."""
    for item in overrides:
        # values like -1 or -0.5 are not options; "--opt=value" is
        if isinstance(item, str) and item.split("=", 1)[0] in option_strings:
            return item
    return None


def debug_requested() -> bool:
    """True with --debug on the last parsed command line or RESDET_DEBUG=1 in the environment."""
    return _debug_flag or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def report_user_error(error: BaseException) -> int:
    """Print `error: <message>` (each line of a multi-line message indented below) to stderr; return 2."""
    lines: List[str] = error_message(error).strip().splitlines() or [type(error).__name__]
    sys.stdout.flush()
    sys.stderr.write("error: " + "\n  ".join(lines) + "\n")
    sys.stderr.flush()
    return EXIT_USER_ERROR


def run_tool(func: Callable[..., Any], *args: Any, debug: Optional[bool] = None) -> int:
    """func(*args) as a tool's exit status: its int result (0 for anything else), or 2 after printing a user
    error; with `debug` (default: debug_requested()) a user error is raised instead. Bugs always propagate."""
    try:
        result = func(*args)
    except Exception as error:
        if not is_user_error(error) or (debug_requested() if debug is None else debug):
            raise
        return report_user_error(error)
    return result if isinstance(result, int) else 0
