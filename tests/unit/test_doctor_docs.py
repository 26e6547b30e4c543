"""The production docs' JSON: the IAM and bucket policies and the examples in production.md."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parents[2] / "docs"
BUCKET_ARN = "arn:aws:s3:::my-datasets"


def _load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((DOCS / name).read_text())
    return doc


def _actions(statement: dict[str, Any]) -> set[str]:
    actions = statement["Action"]
    return {actions} if isinstance(actions, str) else set(actions)


def _resources(statement: dict[str, Any]) -> list[str]:
    res = statement["Resource"]
    return [res] if isinstance(res, str) else list(res)


def test_iam_policy_is_least_privilege_and_scoped_to_the_prefix() -> None:
    policy = _load("iam-policy.json")
    assert policy["Version"] == "2012-10-17"
    statements = policy["Statement"]
    assert all(s["Effect"] == "Allow" for s in statements)
    granted = set().union(*(_actions(s) for s in statements))
    assert granted == {
        "s3:ListBucket",
        "s3:GetObject",
        "s3:PutObject",
        "s3:AbortMultipartUpload",
        "s3:DeleteObject",
    }
    for statement in statements:
        for resource in _resources(statement):
            assert resource in (BUCKET_ARN, f"{BUCKET_ARN}/labelhaul/*"), resource
        if _actions(statement) == {"s3:ListBucket"}:
            prefixes = statement["Condition"]["StringLike"]["s3:prefix"]
            assert all(p.startswith("labelhaul") for p in prefixes)
    # Deleting is gc's alone, in a statement of its own so the sync role can leave it out.
    deleting = [s for s in statements if "s3:DeleteObject" in _actions(s)]
    assert len(deleting) == 1 and _actions(deleting[0]) == {"s3:DeleteObject"}
    assert "Gc" in deleting[0]["Sid"]


def test_bucket_policy_denies_unconditional_writes_of_manifests_blobs_and_pointer() -> None:
    policy = _load("bucket-policy.json")
    assert policy["Version"] == "2012-10-17"
    covered: dict[str, dict[str, str]] = {}
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Deny" and statement["Principal"] == "*"
        assert _actions(statement) == {"s3:PutObject"}
        nulls = statement["Condition"]["Null"]
        assert nulls.get("s3:if-none-match") == "true"
        for resource in _resources(statement):
            assert resource.startswith(f"{BUCKET_ARN}/labelhaul/")
            covered[resource] = nulls
    assert f"{BUCKET_ARN}/labelhaul/*/versions/*/manifest.json" in covered
    assert f"{BUCKET_ARN}/labelhaul/*/blobs/sha256/*" in covered
    # The pointer moves by If-Match: the deny must only hit a write with neither header.
    assert covered[f"{BUCKET_ARN}/labelhaul/*/_latest.json"] == {
        "s3:if-none-match": "true",
        "s3:if-match": "true",
    }
    # The card is rewritten unconditionally by a racing commit: it must not be covered.
    assert not any("README" in r or r.endswith("/versions/*") for r in covered)


def _json_blocks(markdown: str) -> list[Any]:
    return [json.loads(b) for b in re.findall(r"```json\n(.*?)```", markdown, re.S)]


def test_production_md_json_examples_parse() -> None:
    blocks = _json_blocks((DOCS / "production.md").read_text())
    assert any("Rules" in b for b in blocks)
    lifecycle = next(b for b in blocks if "Rules" in b)
    rules = {r["ID"]: r for r in lifecycle["Rules"]}
    assert rules["abort-incomplete-multipart-uploads"]["AbortIncompleteMultipartUpload"]
    assert any("trigger" in b for b in blocks)


def test_the_failed_run_automation_is_one_prefect_accepts() -> None:
    from prefect.automations import Automation

    blocks = _json_blocks((DOCS / "production.md").read_text())
    doc = next(b for b in blocks if "trigger" in b)
    doc["actions"][0]["block_document_id"] = str(uuid.uuid4())
    automation = Automation.model_validate(doc)
    assert automation.trigger.posture.value == "Reactive"  # type: ignore[union-attr]
    assert "prefect.flow-run.Failed" in automation.trigger.expect  # type: ignore[union-attr]
