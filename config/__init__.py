"""Typed settings for labelhaul (environment, optional .env, defaults).

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from labelhaul.config.settings import Settings, load_settings

__all__ = ["Settings", "load_settings"]
