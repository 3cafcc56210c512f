"""The provenance ledger: keys, signed hash-chained entries, tamper detection, crash safety,
per-image history, and when enforce records into it."""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

import datagate
from datagate.cli import main
from datagate.ledger import merkle
from datagate.ledger.chain import CHECKPOINT, ENTRIES, LedgerError, open_ledger

from .conftest import scan_five_photos

RUNS = 4


@pytest.fixture(scope="module")
def scanned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return scan_five_photos(tmp_path_factory.mktemp("ledger-scan"))


@pytest.fixture(scope="module")
def built(scanned: Path) -> dict[str, Path]:
    """A ledger of several gate runs (and one model record), with its key."""
    key, ledger = scanned / "key.pem", scanned / "ledger"
    assert main(["keygen", "--out", str(key), "--ledger", str(ledger)]) == 0
    for i in range(RUNS):
        out = scanned / f"gate{i}"
        argv = ["enforce", str(scanned / "scan"), "--out", str(out), "-q", "--min-human", "0"]
        code = main([*argv, "--ledger", str(ledger), "--key", str(key)])
        assert code == 0
    assert (
        main(
            [
                "ledger",
                "model",
                "M",
                "--trained-on",
                "2",
                "--ledger",
                str(ledger),
                "--key",
                str(key),
            ]
        )
        == 0
    )
    return {"key": key, "ledger": ledger, "scan": scanned / "scan", "data": scanned / "data"}


@pytest.fixture
def copy(built: dict[str, Path], tmp_path: Path) -> Path:
    dest = tmp_path / "ledger"
    shutil.copytree(built["ledger"], dest)
    return dest


def verify(ledger: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["ledger", "verify", "--ledger", str(ledger), *extra])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def entry(ledger: Path, seq: int) -> Path:
    return ledger / ENTRIES / f"{seq:06d}.json"


def test_keygen_writes_a_private_key_0600_outside_and_the_public_key_inside(
    built: dict[str, Path],
) -> None:
    key, ledger = built["key"], built["ledger"]
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert b"PRIVATE KEY" in key.read_bytes()
    assert b"PUBLIC KEY" in (ledger / "ledger.pub").read_bytes()
    assert not any(b"PRIVATE" in p.read_bytes() for p in ledger.rglob("*") if p.is_file())


def test_keygen_refuses_to_overwrite_or_to_write_into_the_ledger(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "k.pem"
    assert main(["keygen", "--out", str(key), "--no-ledger"]) == 0
    before = key.read_bytes()
    assert main(["keygen", "--out", str(key), "--no-ledger"]) == 2
    assert "a key already exists" in capsys.readouterr().err and key.read_bytes() == before
    inside = tmp_path / "led" / "ledger.key"
    assert main(["keygen", "--out", str(inside), "--ledger", str(tmp_path / "led")]) == 2
    assert "inside the ledger folder" in capsys.readouterr().err and not inside.exists()


def test_an_intact_ledger_verifies(
    built: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, text = verify(built["ledger"], capsys)
    assert code == 0, text
    assert f"{RUNS + 1} entries ({RUNS} runs, 1 models)" in text
    found = open_ledger(built["ledger"])
    assert [e.seq for e in found.entries] == list(range(1, RUNS + 2))
    run = found.entries[0].payload
    assert run["policy"]["digest"] and run["counts"]["images"] == 6
    assert run["content"]["kept"]["hashes"] == 5 and run["content"]["rejected"]["hashes"] == 1
    assert run["human_share"]["low"] is not None and "share" in run["human_share"]
    assert run["overrides"]["flags"] == {"min_human": 0.0} and len(run["overrides"]["digest"]) == 64
    assert run["versions"]["datagate"] == datagate.__version__ and run["versions"]["embedder"]
    assert set(run["files"]) == {
        "manifests/kept.parquet",
        "manifests/rejected.parquet",
        "report.json",
        "croissant.json",
    }


def _edit(ledger: Path) -> None:
    p = entry(ledger, 2)
    doc = json.loads(p.read_text())
    doc["entry"]["run"]["counts"]["kept"] += 1
    p.write_text(json.dumps(doc))


def _edit_whitespace_is_harmless(ledger: Path) -> None:  # not a tamper: canonical JSON
    p = entry(ledger, 2)
    p.write_text(json.dumps(json.loads(p.read_text()), indent=4))


def _delete(ledger: Path) -> None:
    entry(ledger, 2).unlink()


def _delete_and_renumber(ledger: Path) -> None:
    entry(ledger, 2).unlink()
    for seq in range(3, RUNS + 2):
        entry(ledger, seq).rename(entry(ledger, seq - 1))


def _insert(ledger: Path) -> None:
    for seq in range(RUNS + 1, 2, -1):
        entry(ledger, seq).rename(entry(ledger, seq + 1))
    forged = json.loads(entry(ledger, 2).read_text())
    forged["entry"]["seq"] = 3
    entry(ledger, 3).write_text(json.dumps(forged))


def _reorder(ledger: Path) -> None:
    a, b = entry(ledger, 2), entry(ledger, 3)
    text = a.read_text()
    a.write_text(b.read_text())
    b.write_text(text)


def _truncate(ledger: Path) -> None:
    entry(ledger, RUNS + 1).unlink()


def _truncate_all(ledger: Path) -> None:
    shutil.rmtree(ledger / ENTRIES)


def _drop_checkpoint(ledger: Path) -> None:
    (ledger / CHECKPOINT).unlink()


def _edit_checkpoint(ledger: Path) -> None:
    doc = json.loads((ledger / CHECKPOINT).read_text())
    doc["checkpoint"]["size"] = 2
    (ledger / CHECKPOINT).write_text(json.dumps(doc))


def _edit_index(ledger: Path) -> None:
    path = ledger / "runs" / "000002.parquet"
    path.write_bytes(path.read_bytes() + b"\0")


def _half_written(ledger: Path) -> None:
    p = entry(ledger, 3)
    p.write_bytes(p.read_bytes()[:100])


def _swap_signature(ledger: Path) -> None:
    a, b = json.loads(entry(ledger, 2).read_text()), json.loads(entry(ledger, 3).read_text())
    a["signature"] = b["signature"]
    entry(ledger, 2).write_text(json.dumps(a))


TAMPERS: dict[str, tuple[Callable[[Path], None], str]] = {
    "edit": (_edit, "entry 2 (entries/000002.json): signature does not verify"),
    "edit-signature": (_swap_signature, "entry 2 (entries/000002.json): signature does not"),
    "delete": (_delete, "entry 2 (entries/000002.json): missing"),
    "delete-renumbered": (
        _delete_and_renumber,
        "entry 2 (entries/000002.json): records position 3",
    ),
    "insert": (_insert, "entry 3 (entries/000003.json)"),
    "reorder": (_reorder, "entry 2 (entries/000002.json): records position 3"),
    "truncate": (_truncate, f"entry {RUNS + 1} (entries/{RUNS + 1:06d}.json): missing"),
    "truncate-all": (_truncate_all, "entry 1 (entries/000001.json): missing"),
    "checkpoint-deleted": (_drop_checkpoint, "checkpoint.json: checkpoint is missing"),
    "checkpoint-edited": (_edit_checkpoint, "checkpoint.json: signature does not verify"),
    "index-edited": (_edit_index, "entry 2 (entries/000002.json): its verdict index"),
    "half-written": (_half_written, "entry 3 (entries/000003.json): entry is not valid JSON"),
}


@pytest.mark.parametrize("kind", sorted(TAMPERS))
def test_every_tamper_fails_verification_naming_the_first_bad_entry(
    kind: str, copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tamper, expected = TAMPERS[kind]
    tamper(copy)
    code, text = verify(copy, capsys)
    assert code == 2, text
    assert "ledger does not verify" in text and expected in text, text
    assert "Traceback" not in text
    # nothing appends to a broken ledger
    with pytest.raises(LedgerError):
        open_ledger(copy)


def test_reformatting_an_entry_is_not_tampering(
    copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _edit_whitespace_is_harmless(copy)
    assert verify(copy, capsys)[0] == 0


def test_the_wrong_public_key_fails(
    copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other.pem"
    assert main(["keygen", "--out", str(other), "--ledger", str(tmp_path / "l2")]) == 0
    code, text = verify(copy, capsys, "--pub", str(tmp_path / "l2" / "ledger.pub"))
    assert code == 2 and "signed by another key" in text
    code, text = verify(copy, capsys, "--pub", str(tmp_path / "missing.pub"))
    assert code == 2 and "public key not found" in text
    (tmp_path / "junk.pub").write_text("not a key")
    code, text = verify(copy, capsys, "--pub", str(tmp_path / "junk.pub"))
    assert code == 2 and "not a PEM public key" in text


def test_enforce_refuses_a_wrong_missing_or_unreadable_key(
    built: dict[str, Path], copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other.pem"
    assert main(["keygen", "--out", str(other), "--no-ledger"]) == 0
    base = [
        "enforce",
        str(built["scan"]),
        "--out",
        str(tmp_path / "g"),
        "-q",
        "--ledger",
        str(copy),
    ]
    capsys.readouterr()
    assert main([*base, "--key", str(other)]) == 2
    assert "not this ledger's key" in capsys.readouterr().err
    assert main([*base, "--key", str(tmp_path / "nope.pem")]) == 2
    assert "signing key not found" in capsys.readouterr().err
    (tmp_path / "bad.pem").write_text(
        "-----BEGIN PRIVATE KEY-----\nxx\n-----END PRIVATE KEY-----\n"
    )
    assert main([*base, "--key", str(tmp_path / "bad.pem")]) == 2
    assert "not an unencrypted PEM private key" in capsys.readouterr().err
    _edit(copy)
    assert main([*base, "--key", str(built["key"])]) == 2
    assert "ledger does not verify" in capsys.readouterr().err
    assert not (tmp_path / "g" / "manifests").exists()  # checked before anything is judged


def test_a_killed_append_leaves_an_uncommitted_entry_that_the_next_append_replaces(
    built: dict[str, Path], copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = (copy / CHECKPOINT).read_bytes()
    before = len(open_ledger(copy).entries)
    key = str(built["key"])
    assert (
        main(["ledger", "model", "X", "--trained-on", "1", "--ledger", str(copy), "--key", key])
        == 0
    )
    # the process "died" after writing the entry, before the checkpoint: restore the old one
    (copy / CHECKPOINT).write_bytes(checkpoint)
    (copy / ENTRIES / ".000099.json.abc.tmp").write_text("{half")  # a torn temp file
    code, text = verify(copy, capsys)
    assert code == 0 and f"entry {before + 1} was written but never committed" in text
    assert len(open_ledger(copy).entries) == before
    assert (
        main(["ledger", "model", "Y", "--trained-on", "1", "--ledger", str(copy), "--key", key])
        == 0
    )
    found = open_ledger(copy)
    assert [e.payload.get("name") for e in found.entries[before:]] == ["Y"]
    assert not found.uncommitted and not list((copy / ENTRIES).glob(".*.tmp"))


def test_show_lists_every_run_that_saw_an_image(
    built: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = str(built["ledger"])
    capsys.readouterr()
    assert (
        main(["ledger", "show", str(built["data"] / "copy.jpg"), "--ledger", ledger, "--json"]) == 0
    )
    rows = json.loads(capsys.readouterr().out)
    # copy.jpg has the bytes of 0.jpg: every run saw that content twice, kept once
    assert [r["entry"] for r in rows] == [1, 1, 2, 2, 3, 3, 4, 4]
    assert sorted({r["verdict"] for r in rows}) == ["kept", "rejected"]
    assert {r["reason_code"] for r in rows if r["verdict"] == "rejected"} == {"exact_duplicate"}
    sha = rows[0]["sha256"]
    assert main(["ledger", "show", sha, "--ledger", ledger]) == 0
    text = capsys.readouterr().out
    assert text.count("rejected") == RUNS and "exact_duplicate" in text
    assert main(["ledger", "show", "4.jpg", "--ledger", ledger, "--json"]) == 0
    assert [r["verdict"] for r in json.loads(capsys.readouterr().out)] == ["kept"] * RUNS
    assert main(["ledger", "show", "f" * 64, "--ledger", ledger]) == 0
    assert "no run" in capsys.readouterr().out
    assert main(["ledger", "show", "--ledger", ledger]) == 0
    listing = capsys.readouterr().out
    assert "#5" in listing and "model M trained on #2: generation" in listing


def test_enforce_records_into_the_default_ledger_only_when_it_exists(
    built: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATAGATE_LEDGER_KEY", str(tmp_path / "home" / "ledger.key"))
    scan = str(built["scan"])
    assert main(["enforce", scan, "--out", "g1", "--min-human", "0"]) == 0
    assert not (tmp_path / ".datagate").exists()
    assert (tmp_path / "g1" / "croissant.json").exists()
    assert not (tmp_path / "g1" / "attestation.intoto.json").exists()
    assert "no signing key: attestation.intoto.json not written" in capsys.readouterr().out
    assert main(["keygen"]) == 0  # the default key and the default ledger
    assert stat.S_IMODE(os.stat(tmp_path / "home" / "ledger.key").st_mode) == 0o600
    assert main(["enforce", scan, "--out", "g2", "--min-human", "0"]) == 0
    assert "ledger: entry #1" in capsys.readouterr().out
    assert (tmp_path / "g2" / "attestation.intoto.json").exists()
    assert [e.seq for e in open_ledger(tmp_path / ".datagate" / "ledger").entries] == [1]


def test_a_ledger_without_its_key_is_refused(
    built: dict[str, Path],
    copy: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATAGATE_LEDGER_KEY", str(tmp_path / "absent.key"))
    code = main(
        ["enforce", str(built["scan"]), "--out", str(tmp_path / "g"), "--ledger", str(copy)]
    )
    assert code == 2 and "needs its signing key" in capsys.readouterr().err
    assert main(["ledger", "verify", "--ledger", str(tmp_path / "none")]) == 2
    assert "no ledger here" in capsys.readouterr().err


@pytest.mark.parametrize("n", range(1, 10))
def test_merkle_inclusion_proofs(n: int) -> None:
    items = [bytes([i]) * 32 for i in range(n)]
    root = merkle.root(items)
    for i in range(n):
        proof = merkle.inclusion_proof(items, i)
        assert merkle.verify_inclusion(items[i], i, n, proof, root)
        assert not merkle.verify_inclusion(b"x" * 32, i, n, proof, root)
    assert merkle.content_root(["ab" * 32, "cd" * 32]) == merkle.content_root(
        ["cd" * 32, "ab" * 32]
    )


def test_ledger_init_for_an_existing_key_and_refusal_for_another(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key, other, ledger = tmp_path / "k.pem", tmp_path / "o.pem", tmp_path / "led"
    assert main(["keygen", "--out", str(key), "--no-ledger"]) == 0
    assert main(["keygen", "--out", str(other), "--no-ledger"]) == 0
    assert not ledger.exists()
    assert main(["ledger", "init", "--ledger", str(ledger), "--key", str(key)]) == 0
    assert verify(ledger, capsys)[0] == 0
    assert main(["ledger", "init", "--ledger", str(ledger), "--key", str(key)]) == 0
    assert "already set up" in capsys.readouterr().out
    assert main(["ledger", "init", "--ledger", str(ledger), "--key", str(other)]) == 2
    assert "belongs to another key" in capsys.readouterr().err


def test_the_library_gate_uses_no_default_ledger(
    built: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """datagate.gate.enforce (the pre-commit hook's path) never appends on its own."""
    from datagate.gate import enforce
    from datagate.rules import default_rules_path, load_policy

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATAGATE_LEDGER_KEY", str(tmp_path / "ledger.key"))
    assert main(["keygen"]) == 0
    policy = load_policy(default_rules_path())
    result = enforce(built["scan"], policy, source="test", out=tmp_path / "g")
    assert result.entry is None and result.attestation is None
    assert open_ledger(tmp_path / ".datagate" / "ledger").entries == []
