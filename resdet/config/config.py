"""The config tree: defaults, YAML files with _BASE_, command-line overrides, errors that name the key."""
import os
from typing import List, Sequence

import yaml
from fvcore.common.config import CfgNode as _FvCfgNode

from ..errors import ConfigError, error_message
from .validation import validate_config


class CfgNode(_FvCfgNode):
    """fvcore's CfgNode whose merge errors name the offending key and file."""

    def merge_from_file(self, cfg_filename: str, allow_unsafe: bool = False) -> None:
        """Merge a YAML file (and its _BASE_ chain) into this config."""
        if not os.path.isfile(cfg_filename):
            raise ConfigError(f"config file not found: {cfg_filename}")
        _check_document(cfg_filename, self.VERSION)
        try:
            super().merge_from_file(cfg_filename, allow_unsafe=allow_unsafe)
        except ConfigError:
            raise
        except yaml.YAMLError as err:  # not YAML; str() gives the line and column
            raise ConfigError(f"{cfg_filename}: not valid YAML: {err}") from None
        except (KeyError, ValueError, AssertionError, TypeError, OSError) as err:  # OSError: a missing _BASE_
            raise ConfigError(f"{cfg_filename}: {error_message(err)}") from None

    def merge_from_list(self, cfg_list: Sequence) -> None:
        """Merge trailing `KEY VALUE` pairs from the command line."""
        if len(cfg_list) % 2 != 0:
            raise ConfigError(f"overrides must be KEY VALUE pairs, got an odd count: {list(cfg_list)}")
        try:
            super().merge_from_list(list(cfg_list))
        except (KeyError, ValueError, AssertionError, TypeError) as err:
            raise ConfigError(f"command-line override: {error_message(err)}") from None


def _check_document(cfg_filename: str, version: int) -> None:
    """Each file of a _BASE_ chain must be a YAML mapping whose _BASE_, if any, names a file (fvcore assumes so), and
    whose VERSION, if any, is the config `version` resdet reads."""
    seen = set()
    while cfg_filename not in seen:
        seen.add(cfg_filename)
        try:
            with open(cfg_filename) as file:
                document = yaml.safe_load(file)
        except yaml.YAMLError as err:  # str() gives the line and column
            raise ConfigError(f"{cfg_filename}: not valid YAML: {err}") from None
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"{cfg_filename}: cannot be read ({err}); check the path and any _BASE_") from None
        if document is None:
            return  # an empty file changes nothing
        if not isinstance(document, dict):
            raise ConfigError(f"{cfg_filename}: expected a mapping of config keys, got {type(document).__name__}")
        if document.get("VERSION", version) != version:
            raise ConfigError(f"{cfg_filename}: VERSION is {document['VERSION']!r}, and resdet reads config version "
                              f"{version}: a config of another version (or another toolkit) has other keys")
        if "_BASE_" not in document:
            return
        base = document["_BASE_"]
        if not isinstance(base, str) or not base:
            raise ConfigError(f"{cfg_filename}: _BASE_ must be the path of another config file, got {base!r}")
        if base.startswith(("https://", "http://")):
            return
        cfg_filename = _base_path(cfg_filename, base)
    raise ConfigError(f"{cfg_filename}: its _BASE_ chain includes itself")


def _base_path(cfg_filename: str, base: str) -> str:
    """Where fvcore looks for a _BASE_: relative to the including file unless absolute or a URL."""
    if base.startswith(("~", "/")):
        return os.path.expanduser(base)
    return os.path.join(os.path.dirname(cfg_filename), base)


def get_cfg() -> CfgNode:
    """Return a fresh copy of the default config with every key resdet reads."""
    from .defaults import _C

    return _C.clone()


def setup_cfg(config_file: str, overrides: List[str]) -> CfgNode:
    """Defaults, then the file, then the overrides, checked for impossible values (validate_config); frozen."""
    cfg = get_cfg()
    if config_file:
        cfg.merge_from_file(config_file)
    cfg.merge_from_list(overrides)
    validate_config(cfg, config_file, overrides)
    cfg.freeze()
    return cfg
