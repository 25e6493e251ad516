"""Project-wide settings (environment variables, validated once)."""

from config.settings import Settings, SettingsError

__all__ = ["Settings", "SettingsError"]
