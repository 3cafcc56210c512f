"""Gate attestations (in-toto Statement v1 in a DSSE envelope, `datagate verify`) and the
Croissant 1.1 + RAI metadata of the kept set."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

import datagate
from datagate.cli import main
from datagate.errors import InputError
from datagate.ledger import keys
from datagate.ledger.attest import PAYLOAD_TYPE, PREDICATE_TYPE, write_attestation
from datagate.ledger.croissant import CONFORMS_TO

from .conftest import scan_five_photos

SUBJECTS = ["manifests/kept.parquet", "manifests/rejected.parquet", "report.json", "croissant.json"]


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = scan_five_photos(tmp_path_factory.mktemp("attest"))
    key, ledger = tmp / "key.pem", tmp / "ledger"
    assert main(["keygen", "--out", str(key), "--ledger", str(ledger)]) == 0
    argv = ["enforce", str(tmp / "scan"), "--out", str(tmp / "gate"), "-q", "--min-human", "0"]
    assert main([*argv, "--ledger", str(ledger), "--key", str(key)]) == 0
    return {"gate": tmp / "gate", "key": key, "pub": ledger / "ledger.pub", "tmp": tmp}


@pytest.fixture
def gate_copy(gate: dict[str, Path], tmp_path: Path) -> Path:
    dest = tmp_path / "gate"
    shutil.copytree(gate["gate"], dest)
    return dest


def run_verify(gate_dir: Path, pub: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["verify", str(gate_dir), "--pub", str(pub)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def envelope(gate_dir: Path) -> dict[str, object]:
    return dict(json.loads((gate_dir / "attestation.intoto.json").read_text()))


def test_the_attestation_is_an_in_toto_statement_in_a_dsse_envelope(gate: dict[str, Path]) -> None:
    env = envelope(gate["gate"])
    assert env["payloadType"] == PAYLOAD_TYPE
    payload = base64.b64decode(str(env["payload"]))
    # DSSE v1 pre-authentication encoding, checked here with cryptography alone
    pae = b"DSSEv1 %d %s %d %s" % (len(PAYLOAD_TYPE), PAYLOAD_TYPE.encode(), len(payload), payload)
    public = load_pem_public_key(gate["pub"].read_bytes())
    assert isinstance(public, Ed25519PublicKey)
    [sig] = env["signatures"]  # type: ignore[misc]
    assert sig["keyid"] == keys.key_id(public)
    public.verify(base64.b64decode(sig["sig"]), pae)  # raises if it does not verify
    stmt = json.loads(payload)
    assert stmt["_type"] == "https://in-toto.io/Statement/v1"
    assert stmt["predicateType"] == PREDICATE_TYPE
    for subject in stmt["subject"]:
        data = (gate["gate"] / subject["name"]).read_bytes()
        assert subject["digest"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert [s["name"] for s in stmt["subject"]] == SUBJECTS
    pred = stmt["predicate"]
    assert pred["policy"]["digest"] and pred["policy"]["name"] == "default"
    assert pred["counts"] == {"images": 6, "kept": 5, "rejected": 1, "errors": 0}
    share = pred["human_share"]
    assert {"share", "low", "high", "measured_by"} <= set(share)
    assert pred["diversity"]["images"] == 5 and pred["versions"]["datagate"] == datagate.__version__
    assert len(pred["overrides"]["digest"]) == 64
    assert pred["ledger"]["entry"] == 1 and len(pred["ledger"]["sha256"]) == 64


def test_verify_accepts_an_untouched_gate_folder(
    gate: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, text = run_verify(gate["gate"], gate["pub"], capsys)
    assert code == 0, text
    assert "4 files match their digests" in text and "ledger entry #1" in text
    verified = datagate.verify_attestation(gate["gate"], gate["pub"])
    assert verified.predicate["counts"]["kept"] == 5


@pytest.mark.parametrize("name", SUBJECTS)
def test_verify_names_a_changed_output(
    name: str, gate: dict[str, Path], gate_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = gate_copy / name
    path.write_bytes(path.read_bytes() + b" ")
    code, text = run_verify(gate_copy, gate["pub"], capsys)
    assert code == 2 and f"{name}: sha256" in text and "differs from the attested" in text
    path.unlink()
    code, text = run_verify(gate_copy, gate["pub"], capsys)
    assert code == 2 and "attested file is missing" in text


def test_verify_refuses_wrong_keys_edits_and_foreign_attestations(
    gate: dict[str, Path], gate_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other_key, other_ledger = tmp_path / "o.pem", tmp_path / "o"
    assert main(["keygen", "--out", str(other_key), "--ledger", str(other_ledger)]) == 0
    code, text = run_verify(gate_copy, other_ledger / "ledger.pub", capsys)
    assert code == 2 and "signature does not verify" in text
    # an edited payload
    env = envelope(gate_copy)
    stmt = json.loads(base64.b64decode(str(env["payload"])))
    stmt["predicate"]["counts"]["kept"] = 6
    env["payload"] = base64.b64encode(json.dumps(stmt).encode()).decode()
    (gate_copy / "attestation.intoto.json").write_text(json.dumps(env))
    code, text = run_verify(gate_copy, gate["pub"], capsys)
    assert code == 2 and "signature does not verify" in text
    # a validly signed statement of another kind is still not a gate attestation
    private = keys.load_private(gate["key"])
    foreign = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {},
    }
    write_attestation(gate_copy, foreign, private)
    code, text = run_verify(gate_copy, gate["pub"], capsys)
    assert code == 2 and "not a datagate gate attestation" in text
    for junk in ("{not json", json.dumps({"payload": "x"}), json.dumps([1, 2])):
        (gate_copy / "attestation.intoto.json").write_text(junk)
        code, text = run_verify(gate_copy, gate["pub"], capsys)
        assert code == 2 and "Traceback" not in text and "attestation" in text
    (gate_copy / "attestation.intoto.json").unlink()
    code, text = run_verify(gate_copy, gate["pub"], capsys)
    assert code == 2 and "no attestation here" in text
    with pytest.raises(InputError, match="public key not found"):
        datagate.verify_attestation(gate["gate"], tmp_path / "absent.pub")


def test_an_attestation_without_a_ledger_is_signed_with_the_key_alone(
    gate: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "g"
    argv = ["enforce", str(gate["tmp"] / "scan"), "--out", str(out), "-q", "--min-human", "0"]
    assert main([*argv, "--key", str(gate["key"])]) == 0
    code, text = run_verify(out, gate["pub"], capsys)
    assert code == 0 and "ledger entry" not in text
    assert datagate.verify_attestation(out, gate["pub"]).predicate["ledger"] is None


def test_croissant_describes_the_kept_manifest(gate: dict[str, Path]) -> None:
    import pyarrow.parquet as pq

    doc = json.loads((gate["gate"] / "croissant.json").read_text())
    assert CONFORMS_TO in doc["conformsTo"] and doc["@type"] == "sc:Dataset"
    for prefix in ("cr", "rai", "prov", "sc", "dct"):
        assert prefix in doc["@context"]
    [dist] = doc["distribution"]
    kept = gate["gate"] / "manifests/kept.parquet"
    assert dist["contentUrl"] == "manifests/kept.parquet"
    assert dist["sha256"] == hashlib.sha256(kept.read_bytes()).hexdigest()
    [records] = doc["recordSet"]
    names = [f["name"] for f in records["field"]]
    assert "key" in names and "sha256" in names
    assert set(names) <= set(pq.read_schema(kept).names)
    assert "Human share of the kept set" in doc["rai:dataCollection"]
    share = doc["datagate:humanShare"]
    assert (
        f"{share['share']:.1%} ({share['low']:.1%} to {share['high']:.1%})"
        in doc["rai:dataCollection"]
    )
    assert doc["datagate:humanShare"]["measured_by"]
    assert any(a["name"] == "datagate enforce" for a in doc["prov:wasGeneratedBy"])
    assert doc["prov:wasDerivedFrom"], "the scanned inputs"


def test_croissant_validates_with_mlcroissant(gate: dict[str, Path]) -> None:
    import pyarrow.parquet as pq

    mlc = pytest.importorskip("mlcroissant")
    dataset = mlc.Dataset(jsonld=str(gate["gate"] / "croissant.json"))  # raises on errors
    records = list(dataset.records("kept"))
    assert len(records) == 5
    members = pq.read_table(gate["gate"] / "manifests/kept.parquet").column("member").to_pylist()
    assert sorted(r["kept/member"].decode() for r in records) == sorted(members)
