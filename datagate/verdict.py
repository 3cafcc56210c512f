"""Reusing a verdict: the digests of everything a gate run judged, kept beside its report.

A gate run's verdict depends only on the scan table, its embeddings, the detector's
calibration, the policy, the overrides and datagate's version. The pre-commit hook records
their digests next to its report (``verdict-key.json``) and, when a later commit changes
none of them, shows that report again instead of judging the same data twice.
"""

from __future__ import annotations

import json
from pathlib import Path

from datagate import __version__
from datagate.contract import (
    EMBEDDINGS_FILE,
    REPORT_JSON,
    Report,
    ScanMeta,
    file_sha256,
    load_report,
)
from datagate.io import write_json
from datagate.rules.policy import Policy, policy_digest

KEY_FILE = "verdict-key.json"
Key = dict[str, str | None]


def verdict_key(
    scan_dir: Path, meta: ScanMeta, policy: Policy, overrides: Path | None
) -> Key | None:
    """The digests a verdict depends on (None: cannot tell — a scan without a table digest,
    or a policy with a reference scan, whose content is not hashed here)."""
    table_sha256 = meta["counts"].get("table_sha256")
    if table_sha256 is None or policy.reference is not None:
        return None
    embeddings = scan_dir / EMBEDDINGS_FILE
    if not embeddings.exists():
        embeddings_sha256 = None
    else:  # recorded by the scan that wrote it; hashed here for older scans
        embeddings_sha256 = meta["counts"].get("embeddings_sha256") or file_sha256(embeddings)
    return {
        "datagate": __version__,
        "table": str(table_sha256),
        "embeddings": embeddings_sha256,
        "detector": json.dumps(meta.get("detector"), sort_keys=True),
        "policy": policy_digest(policy),
        "overrides": file_sha256(overrides) if overrides is not None else None,
    }


def last_verdict(out: Path, key: Key | None) -> Report | None:
    """The report in ``out`` when it was judged on exactly ``key``, else None."""
    if key is None or not (out / REPORT_JSON).exists():
        return None
    try:
        found = json.loads((out / KEY_FILE).read_text())
    except (OSError, ValueError):
        return None
    return load_report(out) if found == key else None


def remember_verdict(out: Path, key: Key | None) -> None:
    """Record ``key`` as what the report in ``out`` judged (or forget, for None)."""
    if key is None:
        (out / KEY_FILE).unlink(missing_ok=True)
    else:
        write_json(out / KEY_FILE, key)
