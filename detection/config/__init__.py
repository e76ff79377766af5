"""Configuration: `from detection.config import cfg` gives the defaults; `load_config(file, opts)`
gives a checked, frozen clone merged with a YAML file and `KEY VALUE` overrides."""

from detection.config.defaults import _C as cfg
from detection.config.loader import (
    ConfigError,
    ConfigFileNotFoundError,
    ConfigWarning,
    load_checked_config,
    load_config,
    load_config_or_exit,
    validate_config,
)

__all__ = [
    "cfg",
    "ConfigError",
    "ConfigFileNotFoundError",
    "ConfigWarning",
    "load_checked_config",
    "load_config",
    "load_config_or_exit",
    "validate_config",
]
