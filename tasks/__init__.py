"""Prefect tasks: thin wrappers (retries, timeouts, logging, artifacts) over labelhaul/."""
