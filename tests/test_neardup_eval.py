"""Near-duplicate detection on real files with known groups (../shared/evaldata/neardup)."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from datagate.measures.neardup import near_pairs
from datagate.rules.duplicates import NearDuplicates
from datagate.scanner.engine import scan

# G4 (re-signed copies), G4b (edited after signing) and G5 are the same Canon photograph.
SAME_PICTURE = {"G4": "G5", "G4b": "G5"}
# Transforms a plain dHash is not designed to see, and a file that does not decode.
HASH_BLIND = ("_hflip", "_rotation", "_corrupt")


def _groups(root: Path) -> dict[str, str]:
    member_group: dict[str, str] = {}
    with open(root / "groups.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            gid = row["group_id"]
            if gid.startswith("NEG"):
                continue
            for pattern in row["members (paths relative to neardup/)"].split("|"):
                for path in sorted(root.glob(pattern)):
                    member_group[path.relative_to(root).as_posix()] = SAME_PICTURE.get(gid, gid)
    return member_group


@pytest.fixture(scope="module")
def scanned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:  # type: ignore[type-arg]
    from .conftest import EVALDATA

    root = EVALDATA / "neardup"
    if not root.is_dir():
        pytest.skip(f"real evaluation data not found at {root}")
    out = tmp_path_factory.mktemp("neardup-scan")
    scan([root], out, workers=1)
    return root, pq.read_table(out / "images.parquet").to_pylist()


def test_perceptual_hash_finds_the_groups_it_can_see(scanned) -> None:  # type: ignore[no-untyped-def]
    root, rows = scanned
    groups = _groups(root)
    rows = [r for r in rows if r["decodable"]]
    keys = [r["key"] for r in rows]
    hashes = np.array([r["dhash"] for r in rows], dtype=np.uint64)
    sha = [r["sha256"] for r in rows]
    threshold = NearDuplicates(rule="near_duplicates").max_distance
    i, j, _ = near_pairs(hashes, threshold)
    predicted = {(keys[a], keys[b]) for a, b in zip(i.tolist(), j.tolist())}
    predicted |= {
        (keys[a], keys[b])
        for a, b in itertools.combinations(range(len(rows)), 2)
        if sha[a] == sha[b]
    }

    truth = {
        (a, b)
        for a, b in itertools.combinations(keys, 2)
        if groups.get(a) is not None and groups.get(a) == groups.get(b)
    }
    visible = {p for p in truth if not any(t in k for k in p for t in HASH_BLIND)}
    tp = len(predicted & truth)
    precision = tp / len(predicted) if predicted else 0.0
    recall = tp / len(truth)
    recall_visible = len(predicted & visible) / len(visible)
    print(
        f"\nnear-duplicates (dHash <= {threshold} or same sha256) on {len(rows)} decodable files: "
        f"precision {precision:.3f}, recall {recall:.3f} over {len(truth)} true pairs, "
        f"recall {recall_visible:.3f} over {len(visible)} pairs a perceptual hash can see"
    )
    missed = sorted(visible - predicted)
    assert not missed, f"missed hash-visible pairs: {missed[:5]}"
    false_pos = sorted(predicted - truth)
    assert not false_pos, f"unrelated pictures matched: {false_pos[:5]}"
    # the transforms a dHash cannot see are the only misses
    assert all(any(t in k for k in p for t in HASH_BLIND) for p in truth - predicted)


def test_duplicate_rules_keep_the_human_copy(  # type: ignore[no-untyped-def]
    scanned, tmp_path: Path
) -> None:
    """Of a group of copies, the one with human evidence survives exact and near dedup."""
    import datagate

    root, rows = scanned
    scan_dir = tmp_path / "scan"
    scan([root], scan_dir, workers=1)
    policy = tmp_path / "dedup.yaml"
    policy.write_text("version: 1\nrules:\n  - rule: exact_duplicates\n  - rule: near_duplicates\n")
    out = tmp_path / "gate"
    datagate.enforce(scan_dir, policy, out=out)
    kept = {r["key"]: r for r in pq.read_table(out / "manifests/kept.parquet").to_pylist()}
    rejected = pq.read_table(out / "manifests/rejected.parquet").to_pylist()
    origin = {r["key"]: r["origin"] for r in rows}
    # the camera original (EXIF: human) of the G4/G5 photograph, copied with and without
    # C2PA manifests; before, a same-size copy of unknown origin earlier in scan order won
    assert any(k.endswith("IMG_0003.jpg") for k in kept), "the human copy was dropped"
    assert sum(origin[k] == "human" for k in kept) >= 5
    # every dropped human copy has a human original; no human copy lost to an unknown one
    for row in rejected:
        if row["duplicate_of"] and origin[row["key"]] == "human":
            assert origin[row["duplicate_of"]] == "human", row
