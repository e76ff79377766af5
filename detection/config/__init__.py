"""Configuration: `from detection.config import cfg` gives a copy of the defaults."""

from detection.config.defaults import _C as cfg

__all__ = ["cfg"]
