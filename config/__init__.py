"""Typed settings for labelhaul (environment, optional .env, defaults)."""

from config.settings import Settings, load_settings

__all__ = ["Settings", "load_settings"]
