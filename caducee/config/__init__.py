"""Settings: the schema of ``caducee.toml``, its defaults, and how it is loaded."""

from caducee.config.settings import ConfigError, Settings, load_settings

__all__ = ["ConfigError", "Settings", "load_settings"]
