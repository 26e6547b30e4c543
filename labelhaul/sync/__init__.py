"""What a sync decides, apart from running it; nothing here imports Prefect.

`labelhaul.flows.common.run_sync` holds the dataset's lock, calls the tasks and writes the
artifacts; every choice it makes comes from these modules, unit-tested without Prefect:

- `plan`: what a run does to the dataset (refresh, merge, incremental), from its filters.
- `incremental`: the watermark cursor: the export's filter since it, the full sync a run
  falls back to without one, the next one.
- `request`: what a flow run asks for, from the flow's parameters by name.
- `record`: the run record (`runs/<run_id>.json`) step by step, and the stage timings.
- `version`: the new version's manifest fields.
- `mask_stage`: the mask stage's runner, the parts it runs and its progress.
- `names`: what a run calls things outside the dataset: its lock, artifacts, addresses.
- `report`: what a finished run says about itself: state name, summary, errors.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""
