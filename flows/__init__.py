"""Prefect flows: they orchestrate; the library in labelhaul/ shapes the data.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""
