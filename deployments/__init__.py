"""Deployments: schedules, UI deployments, event triggers and the webhook receiver."""
