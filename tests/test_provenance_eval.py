"""Provenance on real files with known origin (../shared/evaldata/provenance and detect)."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from datagate.scanner.engine import scan
from datagate.scanner.options import ScanOptions

# expected label -> origins that are correct for it
ACCEPT = {
    "ai": {"synthetic"},
    "ai_declared": {"synthetic"},
    "ai_screenshot": {"synthetic"},
    "real_declared": {"human"},
    "ai_stripped": {"unknown"},
    "unknown": {"unknown"},
    "c2pa_stripped": {"unknown"},
    "c2pa_remote": {"unknown"},
    "c2pa_other": {"unknown"},
}


def _scan(root: Path, out: Path) -> dict[str, dict[str, Any]]:
    scan([root], out, ScanOptions(signals=("integrity", "provenance")), workers=1)
    return {r["key"]: r for r in pq.read_table(out / "images.parquet").to_pylist()}


def _confusion(pairs: list[tuple[str, str]]) -> str:
    counts = Counter(pairs)
    labels = sorted({a for a, _ in pairs})
    origins = ["human", "synthetic", "unknown"]
    lines = [f"{'expected':>14} | " + " | ".join(f"{o:>9}" for o in origins)]
    for label in labels:
        lines.append(f"{label:>14} | " + " | ".join(f"{counts[(label, o)]:>9}" for o in origins))
    return "\n".join(lines)


def test_provenance_labels(evaldata: Path, tmp_path: Path) -> None:
    root = evaldata / "provenance"
    rows = _scan(root, tmp_path / "scan")
    with open(root / "labels.csv", newline="") as fh:
        labels = list(csv.DictReader(fh))
    pairs = [(lab["expected_label"], rows[lab["path"]]["origin"]) for lab in labels]
    print(
        "\nprovenance/ confusion (rows: expected label, columns: datagate origin)\n"
        + _confusion(pairs)
    )
    for lab in labels:
        row = rows[lab["path"]]
        label = lab["expected_label"]
        # an invalid, tampered, remote or unreadable manifest is never definitive
        if label.startswith("c2pa_"):
            assert row["origin_strength"] != "definitive", lab["path"]
        if label in ("c2pa_invalid",):
            assert row["c2pa_state"] in ("invalid", "error"), lab["path"]
        if label == "c2pa_remote":
            assert row["c2pa_state"] == "remote", lab["path"]
        if label == "real":
            # camera EXIF is weak evidence; never synthetic, human when a camera is named
            assert row["origin"] != "synthetic", lab["path"]
            if '"IFD0:Make"' in lab["exiftool"] or "DIGITAL CAMERA" in lab["exiftool"]:
                assert (row["origin"], row["origin_strength"]) == ("human", "weak"), lab["path"]
        if label in ACCEPT:
            assert row["origin"] in ACCEPT[label], (
                lab["path"],
                label,
                row["origin"],
                row["evidence"],
            )
        # a manifest whose integrity checks fail (changed after signing) is flagged tampered,
        # and the file's human claims are no stronger than weak; an expired or unknown
        # credential is invalid but not tampering
        mismatch = any(c.endswith(".mismatch") for c in row["c2pa_codes"] or [])
        assert row["c2pa_tampered"] is mismatch, lab["path"]
        if mismatch and row["origin"] == "human":
            assert row["origin_strength"] == "weak" and row["provenance_conflict"], lab["path"]
    tampered = sorted(lab["path"] for lab in labels if rows[lab["path"]]["c2pa_tampered"])
    assert tampered == [
        "c2pa-rs/sdk__tests__fixtures__E-sig-CA.jpg",
        "c2pa-rs/sdk__tests__fixtures__XCA.jpg",
        "c2pa-rs/sdk__tests__fixtures__adobe-20220124-E-clm-CAICAI.jpg",
        "public-testfiles/image__jpeg__truepic-20230212-camera.jpg",
        "public-testfiles/image__jpeg__truepic-20230212-landscape.jpg",
    ]
    # CAWG training-and-data-mining assertions in c2pa-rs's own fixtures
    rights = {
        lab["path"]: rows[lab["path"]]["rights_training"]
        for lab in labels
        if rows[lab["path"]]["rights_training"] is not None
    }
    assert rights == {
        "c2pa-rs/sdk__tests__fixtures__C_with_CAWG_data.jpg": "notAllowed",
        "c2pa-rs/sdk__src__identity__tests__fixtures__claim_aggregation__ims_multiple_manifests"
        ".jpg": "allowed",
    }
    generators = {lab["path"]: rows[lab["path"]]["generator"] for lab in labels}
    assert generators["ComfyUI_examples/flux__flux_dev_example.png"] == "flux1-dev.safetensors"
    assert generators["c2pa-rs/sdk__tests__fixtures__ocsp.jpg"] == "Adobe Firefly"


def test_detect_metadata_and_stripped_images(evaldata: Path, tmp_path: Path) -> None:
    root = evaldata / "detect"
    rows = _scan(root, tmp_path / "scan")
    with open(root / "labels.csv", newline="") as fh:
        labels = list(csv.DictReader(fh))
    pairs = [
        (f"{lab['path'].split('/')[0]}:{lab['label']}", rows[lab["path"]]["origin"])
        for lab in labels
    ]
    print(
        "\ndetect/ confusion (rows: source:label, columns: datagate origin)\n" + _confusion(pairs)
    )
    for lab in labels:
        row = rows[lab["path"]]
        if lab["label"] == "ai":
            assert row["origin"] != "human", (lab["path"], row["evidence"])
        if lab["path"].startswith("necenzurat/") and lab["label"] == "ai":
            assert row["origin"] == "unknown", lab["path"]  # metadata stripped: never human
        if row["origin"] == "synthetic":
            assert lab["label"] == "ai", lab["path"]
    with_metadata = [lab for lab in labels if lab["path"].startswith("comfyui/")]
    found = sum(rows[lab["path"]]["origin"] == "synthetic" for lab in with_metadata)
    print(f"comfyui/: {found} of {len(with_metadata)} recognised as synthetic from their metadata")
    assert found >= 0.8 * len(with_metadata)


@pytest.mark.parametrize("signals", [("integrity", "hashes", "quality")])
def test_scan_without_provenance_has_no_origin_column(
    signals: tuple[str, ...], tmp_path: Path
) -> None:
    from .conftest import DATA

    scan([DATA / "grey.png"], tmp_path, ScanOptions(signals=signals), workers=1)
    assert "origin" not in pq.read_table(tmp_path / "images.parquet").column_names
