"""Prefect tasks: thin wrappers (retries, timeouts, logging, artifacts) over labelhaul/.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""
