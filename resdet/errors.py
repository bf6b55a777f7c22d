"""User errors: problems in what the user gave resdet (config, data, weights, command line), not bugs.

The tools catch every user error in one place (resdet/utils/cli.py) and print its message without a
traceback, exit status 2. So a message must stand alone: name the file, key or value, and say what to do.
Derive new error types from one of the classes below (multiple inheritance keeps a builtin base such as
FileNotFoundError), or register an existing type with register_user_error.
"""
from typing import Tuple, Type


class UserError(Exception):
    """Base of every error caused by the user's input; its message names what is wrong and what to do."""


class ConfigError(UserError, ValueError):
    """A config file or override names an unknown key, or gives a value of the wrong type or an impossible one."""


class UsageError(UserError, ValueError):
    """A command-line value or combination of options that cannot work (a missing --input, a bad flag)."""


class CheckpointError(UserError, ValueError):
    """A weight or checkpoint file that cannot be used: missing, unreadable, unsafe or of an unknown format."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """A weight or checkpoint file that does not exist."""


_registered: Tuple[Type[BaseException], ...] = ()


def register_user_error(error_type: Type[BaseException]) -> Type[BaseException]:
    """Treat `error_type` (and its subclasses) as a user error; returns it, so it also works as a decorator."""
    global _registered
    if error_type not in _registered:
        _registered = _registered + (error_type,)
    return error_type


def user_error_types() -> Tuple[Type[BaseException], ...]:
    """UserError and every registered type."""
    return (UserError,) + _registered


def is_user_error(error: BaseException) -> bool:
    """True for an exception the tools report as a message and exit status 2 rather than as a bug."""
    return isinstance(error, user_error_types())


def error_message(error: BaseException) -> str:
    """The exception's own message (KeyError's str() would add quotes), without a DataLoader worker's traceback."""
    if error.args and isinstance(error.args[0], str):
        return _without_worker_traceback(error.args[0])
    return str(error) or type(error).__name__


def _without_worker_traceback(message: str) -> str:
    """torch re-raises a worker's error as "Caught X in DataLoader worker N.\nOriginal Traceback ...\nX: msg";
    the user needs only msg."""
    if not message.startswith("Caught ") or "\nOriginal Traceback" not in message:
        return message
    last = [line for line in message.splitlines() if line.strip()][-1]
    name, separator, rest = last.partition(": ")
    return rest if separator and " " not in name else last
