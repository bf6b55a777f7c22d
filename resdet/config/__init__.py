"""Config: `get_cfg()` and the merge rules."""
from .config import CfgNode, ConfigError, get_cfg, setup_cfg

__all__ = ["CfgNode", "ConfigError", "get_cfg", "setup_cfg"]
