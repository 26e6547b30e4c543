"""The doctor's checks that need no server: key presence, Prefect, the local store probe."""

from __future__ import annotations

from pathlib import Path

import pytest
from labelhaul.config.settings import load_settings

from labelhaul.doctor import check_api_key, check_prefect, check_store, run_checks


def test_api_key_present_or_missing_and_never_shown() -> None:
    ok = check_api_key(load_settings(labelbox_api_key="lb-secret-123456"))
    assert ok.ok and "lb-secret-123456" not in ok.line()
    missing = check_api_key(load_settings())
    assert not missing.ok and "LABELBOX_API_KEY" in missing.detail
    assert missing.line().startswith("FAIL")


def test_prefect_unset_is_ok_and_says_what_runs_use() -> None:
    check = check_prefect(None, None)
    assert check.ok and "temporary local Prefect server" in check.detail


@pytest.mark.parametrize(
    ("health", "ok", "text"),
    [
        (lambda: None, True, "healthy"),
        (lambda: "ConnectError: refused", False, "ConnectError: refused"),
        (lambda: 1 / 0, False, "ZeroDivisionError"),
    ],
)
def test_prefect_health(health: object, ok: bool, text: str) -> None:
    check = check_prefect("http://prefect.internal:4200/api", health)  # type: ignore[arg-type]
    assert check.ok is ok
    assert text in check.detail
    if not ok:
        assert "PREFECT_API_URL" in check.detail


def test_local_store_probe_passes_and_leaves_nothing(tmp_path: Path) -> None:
    check = check_store(str(tmp_path / "store"))
    assert check.ok, check.detail
    root = tmp_path / "store"
    leftovers = [  # the store's own lock files aside
        p for p in root.rglob("*") if p.is_file() and not p.parent.name.startswith(".labelhaul-")
    ]
    assert leftovers == []
    assert not (tmp_path / "store" / "_doctor").exists()


def test_unwritable_local_store_fails_with_the_fix(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    check = check_store(str(blocker / "store"))
    assert not check.ok
    assert "LABELHAUL_STORE" in check.detail


def test_run_checks_without_key_skips_labelbox_and_still_checks_the_rest(tmp_path: Path) -> None:
    checks = run_checks(load_settings(), store=str(tmp_path / "s"))
    assert [(c.name, c.ok) for c in checks] == [
        ("labelbox api key", False),
        ("store", True),
        ("prefect api", True),
        ("mask codec", True),
    ]


def test_run_checks_scrubs_the_key_from_every_detail(tmp_path: Path) -> None:
    # A store path that happens to contain the key: whatever a check echoes is scrubbed.
    key = "lb-key-0123456789"
    settings = load_settings(labelbox_api_key=key, labelbox_endpoint="http://127.0.0.1:1/gql")
    checks = run_checks(settings, store=str(tmp_path / key))
    text = "\n".join(c.line() for c in checks)
    assert key not in text and "***" in text


def test_the_mask_codec_line_says_whether_the_c_core_was_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from labelhaul import doctor, maskcodec

    assert doctor.check_mask_codec() == doctor.Check(
        "mask codec", True, "C core (labelhaul._maskcore)"
    )
    monkeypatch.setattr(maskcodec, "_core", None)
    fallback = doctor.check_mask_codec()
    assert fallback.ok and "numpy fallback" in fallback.detail and "gcc" in fallback.detail
