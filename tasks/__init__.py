"""Prefect tasks: thin wrappers (retries, timeouts, logging, artifacts) over labelhaul/.

Retries live in one place per operation (`labelhaul/retry.py`): each GraphQL call and each
HTTP GET is retried by the policy from the settings, S3 by botocore's adaptive mode. A
Prefect task retry is added only where the task is idempotent and a failure can outlast
the retries inside it; it never retries a terminal error (`labelhaul.errors.is_terminal`).

=================  ========  ===========================================================
task               retries   why
=================  ========  ===========================================================
start-export       0         its GraphQL calls retry inside; a retry would start the
                             exports again
wait-export        0         each poll retries inside; a retry would start the export
                             timeout over (LABELHAUL_EXPORT_TIMEOUT_S bounds the step)
stage-export       2         idempotent, and a stream cut short can only be retried here:
                             a retry resumes from the staged offset (`StagedStream`)
split-masks        0         mask GETs retry inside (a transient failure left is a record
                             that fails the run); blob PUTs retry in botocore
fetch-media        0         media GETs retry inside (the HTTP policy); a transient
                             failure left is a record that fails the run
read-parent        2         tasks/store.py (unchanged by the retry work): idempotent
list-known-blobs   2         reads and writes. On S3 botocore retries each call already;
assemble-version   1         a local store's calls do not retry, which these cover
land-version       3
begin-run-record   2
write-run-record   3
collect-garbage    2
=================  ========  ===========================================================

No task is cached (`cache_policy=NO_CACHE` on each): every one exports, streams or writes
the staging folder or the store. Under Prefect's default policy (inputs + source + flow run
id), once results are persisted (`PREFECT_RESULTS_PERSIST_BY_DEFAULT`) a flow run's retry
took read-parent, start-export and wait-export from its first attempt and landed that old
export under a watermark taken at the retry. It also saves hashing every task's inputs.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""
