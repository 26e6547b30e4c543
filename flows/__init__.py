"""Prefect flows: they orchestrate; the library in labelhaul/ shapes the data."""
