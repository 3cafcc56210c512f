"""report.md as users read it, pinned by a golden file (pytest --update-golden to accept)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from datagate.report.build import build_report
from datagate.report.markdown import render_markdown
from datagate.rules import RowVectors, apply_policy, parse_policy
from datagate.scanner.options import ScanOptions
from datagate.scanner.schema import images_schema

POLICY = """
rules:
  - rule: decodable
  - rule: exact_duplicates
  - rule: min_human
    min: 0.5
  - rule: max_rejected_fraction
    max: 0.5
"""
CAMERA = json.dumps(
    [
        {
            "source": "camera",
            "says": "human",
            "strength": "weak",
            "detail": "camera EXIF: Canon R5",
            "generator": None,
            "error": False,
        }
    ]
)
A1111 = json.dumps(
    [
        {
            "source": "png-text",
            "says": "synthetic",
            "strength": "definitive",
            "detail": "AUTOMATIC1111 parameters",
            "generator": "sdxl_base",
            "error": False,
        }
    ]
)


def _table() -> pa.Table:
    schema = images_schema(ScanOptions().signals)
    rows = []
    specs = [
        ("photos", "a.jpg", "human", "weak", None, CAMERA, "1" * 64, None),
        ("photos", "b.jpg", "human", "weak", None, CAMERA, "2" * 64, None),
        ("photos", "b-copy.jpg", "human", "weak", None, CAMERA, "2" * 64, None),
        ("gen.tar", "0001.png", "synthetic", "definitive", "sdxl_base", A1111, "3" * 64, None),
        ("gen.tar", "0002.png", "unknown", None, None, None, "4" * 64, "empty file (0 bytes)"),
    ]
    for shard, member, origin, strength, generator, evidence, sha, error in specs:
        row = {f.name: None for f in schema}
        row.update(
            key=f"{shard}/{member}",
            shard=shard,
            member=member,
            reader="folder",
            decodable=error is None,
            error=error,
            sha256=sha,
            origin=origin,
            origin_strength=strength,
            generator=generator,
            evidence=evidence,
            c2pa_state="absent",
            provenance_conflict=False,
        )
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=schema)


def _report(vectors: RowVectors | None = None) -> dict:  # type: ignore[type-arg]
    table = _table()
    policy = POLICY + ("  - rule: min_diversity\n    min: 0.3\n" if vectors is not None else "")
    decision = apply_policy(table, parse_policy(policy, "rules.yaml"), vectors)
    meta = {
        "datagate_version": "0.1.0",
        "created_at": "2026-01-01T00:00:00+00:00",
        "config": {"watermark": "off"},
        "counts": {"skipped_files": 0},
    }
    report = build_report(
        table,
        meta,
        decision,
        policy={
            "source": "rules.yaml",
            "digest": "0123456789abcdef",
            "name": None,
            "overrides": {},
        },
        outputs={
            "kept": "k",
            "rejected": "r",
            "report_json": "j",
            "report_md": "m",
            "report_html": "h",
        },
        vectors=vectors,
    )
    report["datagate_version"] = "0.1.0"
    return report


def test_report_markdown_golden(golden) -> None:  # type: ignore[no-untyped-def]
    report = _report()
    assert report["diversity"] == {"measured": False, "embedder": None}
    golden("report.md", render_markdown(report))


def test_report_markdown_golden_with_diversity(golden) -> None:  # type: ignore[no-untyped-def]
    table = _table()
    keys = table.column("key").to_pylist()
    x = np.eye(8, dtype=np.float16)[[0, 1, 2, 3, 3]]  # the last two rows point the same way
    report = _report(RowVectors.align(table, keys, x, "pixel-v2"))
    div = report["diversity"]
    assert div["embedder"] == "pixel-v2" and div["overall"]["scanned"]["images"] == 5
    rule = next(r for r in report["rules"] if r["rule"] == "min_diversity")
    assert rule["value"] == pytest.approx(div["overall"]["kept"]["index"], abs=1e-3)
    golden("report-diversity.md", render_markdown(report))


# --------------------------------------------------------------------------- end to end


def _png(path: Path, text: dict[str, str], seed: int) -> None:
    from PIL.PngImagePlugin import PngInfo

    from .conftest import photo

    info = PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    photo(seed, (300, 300)).save(path, "PNG", pnginfo=info)


HOSTILE = "evil|\n# Heading [x](http://evil.example.com) `tick` <b>bold</b> *em* _u_"


def _markdown_structure(text: str) -> dict[str, Any]:
    """What a CommonMark + GFM-tables renderer makes of report.md."""
    from markdown_it import MarkdownIt

    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    kinds: dict[str, Any] = {"headings": [], "rows": [], "links": 0, "html": 0, "em": 0}
    for i, t in enumerate(tokens):
        if t.type == "heading_open":
            kinds["headings"].append(tokens[i + 1].content)
        elif t.type == "tr_open":
            cells = 0
            for u in tokens[i + 1 :]:
                if u.type == "tr_close":
                    break
                cells += u.type in ("th_open", "td_open")
            kinds["rows"].append(cells)
        for child in t.children or []:
            kinds["links"] += child.type in ("link_open", "image")
            kinds["html"] += child.type == "html_inline"
            kinds["em"] += child.type == "em_open"  # report.md itself uses only **strong**
        kinds["html"] += t.type == "html_block"
    return kinds


def test_hostile_names_cannot_inject_markdown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datagate.cli import main

    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "in`put|x"
    folder.mkdir()
    comfy = {"3": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": HOSTILE}}}
    _png(folder / "comfy.png", {"prompt": json.dumps(comfy)}, 1)
    _png(folder / "a1111.png", {"parameters": "a cat\nSteps: 20, Model: evil|`x`|y"}, 2)
    _png(folder / "we`ird|na#me [l](evil) <i>.png", {}, 3)
    assert main(["scan", str(folder), "-o", "scan", "--model", "none", "-q"]) == 0
    assert main(["enforce", "scan", "-o", "out", "-q"]) in (0, 1)
    text = (tmp_path / "out" / "report.md").read_text()
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert HOSTILE in report["composition"]["scanned"]["generator"]  # the data is hostile
    found = _markdown_structure(text)
    assert found["headings"] == [
        "✅ datagate: PASS" if report["verdict"] == "pass" else "❌ datagate: FAIL",
        "Dataset rules",
        "Per-image rules",
        "Composition (kept / scanned)",
        "Diversity",
        "Dataset nutrition label",
        "Shards",
    ]
    assert found["links"] == 0 and found["em"] == 0
    assert found["html"] == 2  # only report.md's own <sub> footer
    widths = set(found["rows"])
    assert widths <= {2, 3, 5}, widths  # every row has its table's width
    assert "evil" in text and "input" not in text.replace("in`put", "")


def test_report_md_policy_path_and_plurals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from datagate.cli import main

    from .conftest import jpeg_bytes, photo

    (tmp_path / "work" / "policies").mkdir(parents=True)
    (tmp_path / "work" / "d").mkdir()
    (tmp_path / "work" / "d" / "one.jpg").write_bytes(jpeg_bytes(photo(1)))
    rules = "rules:\n  - rule: decodable\n"
    inside = tmp_path / "work" / "policies" / "mine.yaml"
    outside = tmp_path / "elsewhere" / "theirs.yaml"
    outside.parent.mkdir()
    for path in (inside, outside):
        path.write_text(rules)
    monkeypatch.chdir(tmp_path / "work")
    assert main(["scan", "d", "-o", "scan", "--model", "none", "-q"]) == 0
    for policy, shown in ((inside, "policies/mine.yaml"), (outside, "theirs.yaml")):
        assert main(["enforce", "scan", "-o", "out", "--rules", str(policy), "-q"]) == 0
        text = (tmp_path / "work" / "out" / "report.md").read_text()
        assert f"policy `{shown}`" in text and str(tmp_path) not in text
    assert "**1** image scanned" in text
    assert "(1 shard)" in text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("a|b\n# h", "a\\|b \\# h"),
        ("see http://evil.example.com", "see http\\://evil.example.com"),  # no autolink
        ("www.evil.example.com", "www\\.evil.example.com"),
        ("- item", "\\- item"),
        ("1. first", "1\\. first"),
        ("0.1.0", "0.1.0"),
        ("<img src=x>", "\\<img src=x\\>"),
        ("tab\there\x00", "tab here"),
    ],
)
def test_md_makes_data_literal_text(value: str, text: str) -> None:
    from datagate.report.markdown import md

    assert md(value) == text


@pytest.mark.parametrize(
    ("value", "cell", "text"),
    [
        ("a`b", True, "``a`b``"),
        ("`x``", True, "``` `x`` ```"),
        ("a|b", True, "`a\\|b`"),
        ("a|b", False, "`a|b`"),
        ("line\nbreak", False, "`line break`"),
    ],
)
def test_md_code_fences_and_cells(value: str, cell: bool, text: str) -> None:
    from datagate.report.markdown import md_code

    assert md_code(value, cell=cell) == text


def test_min_human_and_max_unknown_origin_agree_on_unknown_origin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under the strict policy a camera-EXIF photo counts as unknown for min_human (its human
    evidence is weak), but it is not of unknown origin: both rules must say the same."""
    from PIL import Image

    from datagate.cli import main

    from .conftest import photo

    monkeypatch.chdir(tmp_path)
    (tmp_path / "d").mkdir()
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Canon", "Canon EOS R5"
    photo(5, (400, 300)).save(tmp_path / "d" / "photo.jpg", "JPEG", exif=exif, quality=90)
    strict = Path(__file__).resolve().parent.parent / "datagate" / "policies" / "strict.yaml"
    assert main(["scan", "d", "-o", "scan", "--model", "pixel", "-q"]) == 0
    assert main(["enforce", "scan", "-o", "out", "--rules", str(strict), "-q"]) == 1
    rules = {
        r["id"]: r for r in json.loads((tmp_path / "out" / "report.json").read_text())["rules"]
    }
    assert rules["max_unknown_origin"]["message"].startswith("unknown origin 0 of 1 ")
    assert rules["min_human"]["details"]["discounted"] == 1
    assert (
        "(0 human, 0 synthetic, 0 unknown origin, 1 with provenance counted as unknown "
        "(human evidence weaker than strong or C2PA from an untrusted signer); "
        "unknown counted as not human)"
    ) in rules["min_human"]["message"]
