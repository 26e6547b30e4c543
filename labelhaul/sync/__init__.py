"""What a sync decides, apart from running it; nothing here imports Prefect.

- `plan`: what a run does to the dataset (refresh, merge, incremental), from its filters.
- `report`: what a finished run says about itself: state name, summary, errors.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""
