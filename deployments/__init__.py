"""Deployments: schedules, UI deployments, event triggers and the webhook receiver.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""
