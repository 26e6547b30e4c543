"""Assembling a version in the flow process alone against with the sync's mask workers.

    python -m bench assemble                          # 3,000 labels x 8 instances
    python -m bench.bench_assemble --labels 1000 --rounds 3

Issue 17: assembling (the parts' records into Parquet tables, their digests, COCO) ran on
one core while the mask pool's warm workers sat idle. `pipeline.assemble_version` with
`offload` hands each part's table building (`build_part_tables`) and each table's digest
to the pool. Both arms assemble the same staged export (synthetic 1280x853 rows of the
emulator's, one stand-in mask result per instance, parts of 100 composites, as a sync
stages them) into fresh folders, alternating over `--rounds`, with one `MaskPool` of 2
workers started and warmed before any timing (as a sync's pool is by then). Printed:
median wall time of each arm, the flow process's own CPU, and the ratio; the two arms'
table files and COCO are checked byte for byte. Nothing here asserts a timer.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench._common import load_average
from bench.summary import record


def land_stand_in_masks(staging: Path, parts: list[str], *, width: int, height: int) -> None:
    """Stand in for the mask stage: one 1x1 result per instance of every staged job."""
    from labelhaul.masktypes import MaskResult
    from labelhaul.pipeline import part_jobs, write_mask_results

    for part in parts:
        results = [
            MaskResult(
                data_row_id=j.data_row_id,
                label_id=j.label_id,
                feature_id=inst.feature_id,
                sha256="0" * 64,
                x=0,
                y=0,
                w=1,
                h=1,
                area=1,
                height=height,
                width=width,
                rle="01",
                source="composite",
            )
            for j in part_jobs(staging, part)
            for inst in j.instances
        ]
        write_mask_results(staging, part, results, [])


def _stage(labels: int, staging: Path) -> list[str]:
    """Stage a synthetic export and stand-in mask results; return its parts."""
    from labelhaul.emulator.synthetic import SyntheticSpec, build_row
    from labelhaul.pipeline import stage_export

    spec = SyntheticSpec.make(n_rows=labels, instances=8, seed=1, width=1280, height=853)
    lines, offset = [], 0
    for i in range(labels):
        line = orjson.dumps(build_row(spec, i))
        lines.append((offset, line))
        offset += len(line) + 1
    summary = stage_export(lines, staging, part_composites=100)
    land_stand_in_masks(staging, summary.parts, width=1280, height=853)
    return summary.parts


def _files(version: Any) -> dict[str, bytes]:
    out = {name: Path(path).read_bytes() for name, path in version.tables.items()}
    out["coco"] = Path(version.coco).read_bytes()
    return out


def main(argv: list[str] | None = None) -> None:
    from labelhaul.maskpool import MaskPool
    from labelhaul.pipeline import assemble_version

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--labels", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    print(
        f"machine: {os.cpu_count()} CPUs, load average {load_average()}; "
        f"{args.labels} labels x 8 instances, 1280x853, parts of 100 composites",
        flush=True,
    )
    work = Path(tempfile.mkdtemp(prefix="bench-assemble-"))
    pool = MaskPool(2)
    pool.warm()
    try:
        source = work / "staged"
        parts = _stage(args.labels, source)
        time.sleep(2)  # the pool's workers finish importing before any timing
        wall: dict[str, list[float]] = {"flow alone": [], "with the mask pool": []}
        cpu: dict[str, list[float]] = {k: [] for k in wall}
        files: dict[str, dict[str, bytes]] = {}
        for rnd in range(args.rounds):
            arms = list(wall) if rnd % 2 == 0 else list(reversed(wall))
            for arm in arms:
                staging = work / f"{rnd}-{len(files)}-{arm[:4]}"
                shutil.copytree(source, staging)
                offload = pool.submit if arm != "flow alone" else None
                c0, t0 = time.process_time(), time.perf_counter()
                version = assemble_version(staging, parts, offload=offload)
                wall[arm].append(time.perf_counter() - t0)
                cpu[arm].append(time.process_time() - c0)
                files.setdefault(arm, _files(version))
                print(
                    f"  round {rnd + 1} {arm}: {wall[arm][-1]:.2f}s, this process's CPU "
                    f"{cpu[arm][-1]:.2f}s, tables digested in the pool "
                    f"{version.digested_elsewhere}",
                    flush=True,
                )
        same = files["flow alone"] == files["with the mask pool"]
        base, ours = (statistics.median(wall[k]) for k in wall)
        print(
            f"median: flow alone {base:.2f}s (CPU {statistics.median(cpu['flow alone']):.2f}s), "
            f"with the mask pool {ours:.2f}s (this process's CPU "
            f"{statistics.median(cpu['with the mask pool']):.2f}s): {base / ours:.2f}x; "
            f"tables and COCO byte for byte the same: {same}"
        )
        print(f"load average after: {load_average()}")
        record("assemble", f"{args.labels} labels, wall", "flow alone", f"{base / ours:.2f}x")
        if not same:
            raise SystemExit("the two arms wrote different files")
    finally:
        pool.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
