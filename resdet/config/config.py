"""The config tree: defaults, YAML files with _BASE_, command-line overrides, errors that name the key."""
import os
from typing import List, Sequence

from fvcore.common.config import CfgNode as _FvCfgNode


class ConfigError(ValueError):
    """A config file or override names an unknown key or gives a value of the wrong type."""


class CfgNode(_FvCfgNode):
    """fvcore's CfgNode whose merge errors name the offending key and file."""

    def merge_from_file(self, cfg_filename: str, allow_unsafe: bool = False) -> None:
        """Merge a YAML file (and its _BASE_ chain) into this config."""
        if not os.path.isfile(cfg_filename):
            raise ConfigError(f"config file not found: {cfg_filename}")
        try:
            super().merge_from_file(cfg_filename, allow_unsafe=allow_unsafe)
        except ConfigError:
            raise
        except (KeyError, ValueError, AssertionError, TypeError) as err:
            raise ConfigError(f"{cfg_filename}: {_message(err)}") from None

    def merge_from_list(self, cfg_list: Sequence) -> None:
        """Merge trailing `KEY VALUE` pairs from the command line."""
        if len(cfg_list) % 2 != 0:
            raise ConfigError(f"overrides must be KEY VALUE pairs, got an odd count: {list(cfg_list)}")
        try:
            super().merge_from_list(list(cfg_list))
        except (KeyError, ValueError, AssertionError, TypeError) as err:
            raise ConfigError(f"command-line override: {_message(err)}") from None


def _message(err: Exception) -> str:
    return err.args[0] if err.args and isinstance(err.args[0], str) else str(err)


def get_cfg() -> CfgNode:
    """Return a fresh copy of the default config with every key resdet reads."""
    from .defaults import _C

    return _C.clone()


def setup_cfg(config_file: str, overrides: List[str]) -> CfgNode:
    """Defaults, then the file, then the overrides; frozen."""
    cfg = get_cfg()
    if config_file:
        cfg.merge_from_file(config_file)
    cfg.merge_from_list(overrides)
    cfg.freeze()
    return cfg
