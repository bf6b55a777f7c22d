"""Config: `get_cfg()` and the merge rules."""
from .config import CfgNode, ConfigError, get_cfg, setup_cfg
from .validation import check_world_size, validate_config

__all__ = ["CfgNode", "ConfigError", "get_cfg", "setup_cfg", "validate_config", "check_world_size"]
