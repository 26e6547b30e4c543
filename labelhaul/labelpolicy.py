"""Choose which label of a data row feeds the training outputs (COCO, pulled masks).

Consensus and benchmark projects give one data row several labels. The tables keep every
label; the training outputs (COCO instances, `labelhaul pull` masks) use one per data row,
chosen by a declared policy, or every label with `all`:

- `benchmark` (default): the benchmark reference label (a label that a label of the row names
  in `performance_details.benchmark_reference_label`), else the highest `consensus_score`,
  else the latest.
- `consensus`: the highest `consensus_score`, else the latest.
- `latest`: the label created last (`label_details.created_at`).
- `all`: every label (objects of all labels land on the one image).

Ties are broken by the label id, so the choice is deterministic. Only ground-truth labels
(`source == "label"`) are chosen among; model-run predictions are all kept.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any

LABEL_POLICY_COLUMNS = (
    "data_row_id",
    "label_id",
    "source",
    "created_at",
    "consensus_score",
    "benchmark_reference_label",
)


class LabelPolicy(StrEnum):
    """Which label of a data row with several labels feeds COCO and pulled masks."""

    benchmark = "benchmark"
    consensus = "consensus"
    latest = "latest"
    all = "all"


DEFAULT_LABEL_POLICY = LabelPolicy.benchmark


def parse_label_policy(value: str | LabelPolicy | None) -> LabelPolicy:
    """Return the policy named `value` (None: the default), or raise ValueError naming choices."""
    if value is None or value == "":
        return DEFAULT_LABEL_POLICY
    try:
        return LabelPolicy(str(value).strip().lower())
    except ValueError:
        choices = ", ".join(p.value for p in LabelPolicy)
        raise ValueError(
            f"unknown label policy {value!r}: set LABELHAUL_LABEL_POLICY (or the flow's "
            f"label_policy parameter) to one of {choices}"
        ) from None


def _rank(policy: LabelPolicy, rec: Mapping[str, Any], refs: set[str]) -> tuple[Any, ...]:
    label_id = str(rec.get("label_id") or "")
    created = str(rec.get("created_at") or "")
    score = rec.get("consensus_score")
    consensus = float(score) if score is not None else float("-inf")
    if policy is LabelPolicy.benchmark:
        return (label_id in refs, consensus, created, label_id)
    if policy is LabelPolicy.consensus:
        return (consensus, created, label_id)
    return (created, label_id)


def select_labels(policy: LabelPolicy | str, labels: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Return data row id -> the chosen label id, for data rows with more than one label.

    Args:
        policy: a `LabelPolicy` (or its name).
        labels: `labels` table records (at least `LABEL_POLICY_COLUMNS`); read twice when the
            policy is `benchmark` (pass a list, or call with a fresh iterable per pass through
            `select_labels_from`).

    Rows with one label are left out of the result: their label is used as it is. With
    policy `all` the result is empty.
    """
    records = list(labels) if not isinstance(labels, list) else labels
    return select_labels_from(policy, lambda: records)


def select_labels_from(policy: LabelPolicy | str, read: Any) -> dict[str, str]:
    """Like `select_labels`, with `read()` returning a fresh iterable of label records.

    Memory: one small entry per data row (the best label so far), not the records.
    """
    chosen_policy = parse_label_policy(policy)
    if chosen_policy is LabelPolicy.all:
        return {}
    refs: set[str] = set()
    if chosen_policy is LabelPolicy.benchmark:
        for rec in read():
            ref = rec.get("benchmark_reference_label")
            if ref and rec.get("source", "label") == "label":
                refs.add(str(ref))
    best: dict[str, tuple[tuple[Any, ...], str, int]] = {}
    for rec in read():
        if rec.get("source", "label") != "label" or rec.get("label_id") is None:
            continue
        drid = str(rec["data_row_id"])
        rank = _rank(chosen_policy, rec, refs)
        hit = best.get(drid)
        if hit is None:
            best[drid] = (rank, str(rec["label_id"]), 1)
        elif rank > hit[0]:
            best[drid] = (rank, str(rec["label_id"]), hit[2] + 1)
        else:
            best[drid] = (hit[0], hit[1], hit[2] + 1)
    return {drid: label for drid, (_, label, n) in best.items() if n > 1}


def is_selected(rec: Mapping[str, Any], selected: Mapping[str, str]) -> bool:
    """Return whether an annotation record belongs to its data row's chosen label."""
    if rec.get("source", "label") != "label":
        return True
    chosen = selected.get(str(rec.get("data_row_id")))
    return chosen is None or chosen == rec.get("label_id")
