"""Provenance hardening: named generators, unsigned human claims, tampered manifests, XMP read
as RDF/XML (defused), and rights-holder opt-outs of AI training, end to end.

C2PA fixtures are signed here at test time with c2pa-python and a throwaway test CA made with
``cryptography`` (the signer is not on any trust list, so manifests are valid, untrusted).
"""

from __future__ import annotations

import datetime
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import PngImagePlugin

from datagate.cli import main
from datagate.provenance import evidence as prov
from datagate.provenance import xmp as X
from datagate.rules import Policy, apply_policy
from datagate.rules.origin import effective_origin, weigh_origins

from .conftest import jpeg_bytes, photo
from .test_provenance import _row

IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"
RDF_NS = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"

# ----------------------------------------------------------------- fixtures


def _jpeg(xmp: str | None = None, seed: int = 1, size: tuple[int, int] = (96, 96)) -> bytes:
    buf = io.BytesIO()
    kwargs: dict[str, Any] = {"xmp": xmp.encode()} if xmp is not None else {}
    photo(seed, size).save(buf, "JPEG", quality=90, **kwargs)
    return buf.getvalue()


def _png(xmp: str | None = None, text: dict[str, str] | None = None, seed: int = 2) -> bytes:
    info = PngImagePlugin.PngInfo()
    if xmp is not None:
        info.add_itxt("XML:com.adobe.xmp", xmp)
    for k, v in (text or {}).items():
        info.add_text(k, v)
    buf = io.BytesIO()
    photo(seed, (96, 96)).save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def _packet(body: str, quote: str = '"') -> str:
    """An XMP packet around ``body`` (rdf:Description elements), in the given quote style."""
    q = quote
    return (
        f"<?xpacket begin={q}\ufeff{q} id={q}W5M0MpCehiHzreSzNTczkc9d{q}?>\n"
        f"<x:xmpmeta xmlns:x={q}adobe:ns:meta/{q}>\n"
        f"<rdf:RDF xmlns:rdf={q}{RDF_NS}{q}>\n{body}\n</rdf:RDF>\n</x:xmpmeta>\n"
        f"<?xpacket end={q}w{q}?>"
    )


# exiftool writes one rdf:Description per namespace, single quotes, properties as elements
EXIFTOOL_AI = _packet(
    """ <rdf:Description rdf:about=''
  xmlns:Iptc4xmpExt='http://iptc.org/std/Iptc4xmpExt/2008-02-29/'>
  <Iptc4xmpExt:DigitalSourceType>"""
    + IPTC
    + """trainedAlgorithmicMedia</Iptc4xmpExt:DigitalSourceType>
 </rdf:Description>
 <rdf:Description rdf:about=''
  xmlns:dc='http://purl.org/dc/elements/1.1/'>
  <dc:subject>
   <rdf:Bag>
    <rdf:li>landscape</rdf:li>
    <rdf:li>NoAI</rdf:li>
   </rdf:Bag>
  </dc:subject>
 </rdf:Description>""",
    quote="'",
)

# Adobe writes one rdf:Description with simple properties as double-quoted attributes
ADOBE_HUMAN = _packet(
    """  <rdf:Description rdf:about=""
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
    xmlns:plus="http://ns.useplus.org/ldf/xmp/1.0/"
   xmp:CreatorTool="Adobe Photoshop 25.0 (Macintosh)"
   Iptc4xmpExt:DigitalSourceType=\""""
    + IPTC
    + """digitalCapture"
   plus:DataMining="http://ns.useplus.org/ldf/vocab/DMI-PROHIBITED-AIMLTRAINING"/>"""
)


def _ca_and_signer() -> Any:
    """A test CA and an ES256 signing certificate it issued (c2pa needs a CA-issued leaf)."""
    c2pa = pytest.importorskip("c2pa")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, cn),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "datagate tests"),
            ]
        )

    def usage(sign: bool) -> x509.KeyUsage:
        return x509.KeyUsage(
            digital_signature=sign,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=not sign,
            crl_sign=not sign,
            encipher_only=False,
            decipher_only=False,
        )

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def builder(subject: str, public: Any) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name("datagate test CA"))
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        )

    ca = (
        builder("datagate test CA", ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage(False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        builder("datagate test signer", key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage(True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    chain = leaf.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(
        serialization.Encoding.PEM
    )
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return c2pa.Signer.from_info(c2pa.C2paSignerInfo(b"es256", chain, private, None))


def sign(data: bytes, assertions: list[dict[str, Any]], mime: str = "image/jpeg") -> bytes:
    """``data`` with an embedded C2PA manifest carrying ``assertions``, signed by a test CA."""
    import c2pa

    manifest = {
        "claim_generator_info": [{"name": "datagate-tests", "version": "1"}],
        "title": "fixture",
        "assertions": assertions,
    }
    out = io.BytesIO()
    with c2pa.Builder(json.dumps(manifest)) as builder:
        builder.sign(_ca_and_signer(), mime, io.BytesIO(data), out)
    return out.getvalue()


def created(source_type: str) -> dict[str, Any]:
    action = {"action": "c2pa.created", "digitalSourceType": IPTC + source_type}
    return {"label": "c2pa.actions", "data": {"actions": [action]}}


def training_mining(use: str, label: str = "cawg.training-mining") -> dict[str, Any]:
    prefix = label.split(".", 1)[0]
    entries = {
        f"{prefix}.ai_generative_training": {"use": use},
        f"{prefix}.ai_training": {"use": use},
        f"{prefix}.data_mining": {"use": "allowed"},
    }
    return {"label": label, "data": {"entries": entries}}


def tamper(data: bytes) -> bytes:
    """Change one byte of a JPEG's entropy-coded pixels (after the manifest was signed)."""
    at = len(data) - 64
    while data[at] in (0xFF, 0x00) or data[at - 1] == 0xFF:
        at -= 1
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def _shard(path: Path, samples: dict[str, tuple[bytes, dict[str, Any]]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for key, (image, meta) in samples.items():
            for name, payload in (
                (f"{key}.jpg", image),
                (f"{key}.json", json.dumps(meta).encode()),
            ):
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    return path


def _scan(src: Path, out: Path) -> dict[str, dict[str, Any]]:
    args = ["scan", str(src), "-o", str(out), "--model", "none", "-q", "--workers", "1"]
    assert main(args) == 0
    rows = pq.read_table(out / "images.parquet").to_pylist()
    return {str(r["key"]).rsplit("/", 1)[-1]: r for r in rows}


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    """Provenance rows as a scan table with the real schema."""
    from datagate.scanner.schema import images_schema

    schema = images_schema(("provenance",))
    full = []
    for i, row in enumerate(rows):
        full.append({**dict.fromkeys(schema.names), **row, "key": f"s/{i}", "shard": "s",
                     "member": str(i), "reader": "folder"})  # fmt: skip
    return pa.Table.from_pylist(full, schema=schema)


def _enforce(scan_dir: Path, rules: str, out: Path) -> tuple[int, dict[str, dict[str, Any]]]:
    """Exit code, and per member: kept (None) or the rejected row's reason code."""
    path = out.parent / f"{out.name}.yaml"
    path.write_text(rules)
    code = main(["enforce", str(scan_dir), "--rules", str(path), "-o", str(out), "-q"])
    rejected = pq.read_table(out / "manifests" / "rejected.parquet").to_pylist()
    kept = pq.read_table(out / "manifests" / "kept.parquet").to_pylist()
    result: dict[str, Any] = {r["member"]: {"kept": True} for r in kept}
    result.update({r["member"]: {"kept": False, **r} for r in rejected})
    return code, result


# ----------------------------------------------------------------- 1. named generators


def test_sidecar_human_with_a_named_generator_is_synthetic_with_a_conflict() -> None:
    row = _row(jpeg_bytes(photo(11)), {"json": {"origin": "human", "generator": "Midjourney"}})
    assert (row["origin"], row["origin_strength"], row["generator"]) == (
        "synthetic",
        "strong",
        "Midjourney",
    )
    assert row["provenance_conflict"] is True


@pytest.mark.parametrize(
    ("data", "where"),
    [
        (_png(text={"Software": "Midjourney v6"}), "text chunk Software"),
        (_png(text={"Source": "Adobe Firefly"}), "text chunk Source"),
        (
            _jpeg(
                _packet(
                    '<rdf:Description rdf:about="" xmlns:tiff="http://ns.adobe.com/tiff/1.0/" '
                    'tiff:Software="DALL-E 3"/>'
                )
            ),
            "Software DALL-E 3",
        ),
    ],
)
def test_a_generator_named_in_png_text_or_xmp_is_synthetic(data: bytes, where: str) -> None:
    row = _row(data)
    assert row["origin"] == "synthetic" and row["generator"], row["evidence"]
    assert where in row["evidence"]


def test_reject_generators_sees_a_generator_declared_beside_a_human_origin(
    tmp_path: Path,
) -> None:
    shard = _shard(
        tmp_path / "web-000.tar",
        {
            "a": (jpeg_bytes(photo(12)), {"origin": "human", "generator": "Midjourney"}),
            "b": (jpeg_bytes(photo(13)), {"origin": "human"}),
        },
    )
    rows = _scan(shard, tmp_path / "scan")
    assert rows["a.jpg"]["generator"] == "Midjourney"
    code, result = _enforce(
        tmp_path / "scan",
        "rules:\n  - rule: provenance\n    reject_generators: ['*midjourney*']\n",
        tmp_path / "out",
    )
    assert code == 0
    assert result["a.jpg"]["reason_code"] == "generator_rejected"
    assert result["b.jpg"]["kept"]


# ----------------------------------------------------------------- 2. unsigned human claims

STRICT_HUMAN = """rules:
  - rule: min_human
    min: 0.5
    unknown: exclude
    human_evidence: strong
"""


def test_one_xmp_line_no_longer_makes_an_image_human_for_the_strict_evidence_bar(
    tmp_path: Path,
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "forged.jpg").write_bytes(_jpeg(ADOBE_HUMAN, seed=14))
    (src / "ai.png").write_bytes(_png(text={"parameters": "x\nSteps: 20, Sampler: Euler"}))
    rows = _scan(src, tmp_path / "scan")
    forged = rows["forged.jpg"]
    assert (forged["origin"], forged["origin_strength"]) == ("human", "weak")
    # the evidence keeps the strength as read: a policy may decide again
    (item,) = [e for e in json.loads(forged["evidence"]) if e["source"] == "xmp"]
    assert (item["says"], item["strength"]) == ("human", "strong")
    code, _ = _enforce(tmp_path / "scan", STRICT_HUMAN, tmp_path / "out")
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    human = next(r for r in report["rules"] if r["rule"] == "min_human")
    assert code == 1 and human["details"]["human"] == 0, human["message"]
    # a policy that trusts unsigned claims says so, and enforce weighs them as read
    trusting = "unsigned_human: strong\n" + STRICT_HUMAN
    code, _ = _enforce(tmp_path / "scan", trusting, tmp_path / "trusting")
    report = json.loads((tmp_path / "trusting" / "report.json").read_text())
    human = next(r for r in report["rules"] if r["rule"] == "min_human")
    assert code == 0 and human["details"]["human"] == 1, human["message"]


def test_a_valid_c2pa_human_claim_stays_strong(tmp_path: Path) -> None:
    signed = sign(_jpeg(seed=15), [created("digitalCapture")])
    row = _row(signed)
    assert (row["c2pa_state"], row["c2pa_trusted"]) == ("valid", False)
    assert (row["origin"], row["origin_strength"], row["generation"]) == ("human", "strong", 0)


def test_policy_unsigned_human_strong_weighs_claims_as_read() -> None:
    table = _table([_row(_jpeg(ADOBE_HUMAN, seed=16)), _row(_jpeg(seed=17))])
    policy = Policy.validate_data(
        {"unsigned_human": "strong", "rules": [{"rule": "min_human", "min": 0.5}]}
    )
    assert Policy.validate_data({"rules": [{"rule": "decodable"}]}).unsigned_human == "weak"
    weighed = weigh_origins(table, policy.unsigned_human)
    assert weighed.column("origin_strength").to_pylist() == ["strong", None]
    assert weighed.column("generation").to_pylist() == [0, None]
    strict = Policy.validate_data({"rules": [{"rule": "min_human", "min": 0.5,
                                              "human_evidence": "strong"}]})  # fmt: skip
    rule = strict.rules[0]
    assert effective_origin(table, rule).tolist() == ["unknown", "unknown"]  # type: ignore[arg-type]
    assert effective_origin(weighed, rule).tolist() == ["human", "unknown"]  # type: ignore[arg-type]
    assert weigh_origins(weighed, "weak").column("origin_strength").to_pylist() == ["weak", None]
    decision = apply_policy(weighed, strict)
    assert decision.outcomes[-1].details["human"] == 1


def test_a_scan_stored_before_the_default_counts_unsigned_claims_as_weak() -> None:
    """A row stored with the old weighing (sidecar human = strong) is decided again."""
    row = _row(jpeg_bytes(photo(18)), {"json": {"origin": "human"}})
    assert row["origin_strength"] == "weak"
    row["origin_strength"] = "strong"
    table = _table([row])
    # as written by provenance signal v2, before unsigned claims weighed weak
    metadata = dict(table.schema.metadata or {})
    metadata[b"datagate.signals"] = json.dumps({"provenance": 2}).encode()
    table = table.replace_schema_metadata(metadata)
    strict = Policy.validate_data(
        {"rules": [{"rule": "min_human", "min": 0.5, "human_evidence": "strong"}]}
    )
    assert effective_origin(table, strict.rules[0]).tolist() == ["unknown"]  # type: ignore[arg-type]
    # a current scan's stored verdicts are used as they are
    current = _table([{**row, "origin_strength": "weak"}])
    assert effective_origin(current, strict.rules[0]).tolist() == ["unknown"]  # type: ignore[arg-type]


def test_a_tampered_manifest_caps_the_files_human_claims_and_can_be_rejected(
    tmp_path: Path,
) -> None:
    signed = sign(_jpeg(ADOBE_HUMAN, seed=19, size=(256, 256)), [created("digitalCapture")])
    broken = tamper(signed)
    row = _row(broken)
    assert row["c2pa_state"] == "invalid" and row["c2pa_tampered"] is True
    assert "assertion.dataHash.mismatch" in row["c2pa_codes"]
    assert (row["origin"], row["origin_strength"]) == ("human", "weak")
    assert row["provenance_conflict"] is True and "tampered" in row["evidence"]
    # even a policy that trusts unsigned claims does not let them stand beside tampering
    items = [prov.Evidence(**e) for e in json.loads(row["evidence"])]
    verdict = prov.decide(items, "strong")
    assert (verdict.origin, verdict.strength, verdict.tampered) == ("human", "weak", True)
    assert _row(signed)["c2pa_tampered"] is False
    src = tmp_path / "src"
    src.mkdir()
    (src / "tampered.jpg").write_bytes(broken)
    (src / "signed.jpg").write_bytes(signed)
    _scan(src, tmp_path / "scan")
    rules = "rules:\n  - rule: provenance\n    tampered: reject\n"
    code, result = _enforce(tmp_path / "scan", rules, tmp_path / "out")
    assert code == 0 and result["signed.jpg"]["kept"]
    assert result["tampered.jpg"]["reason_code"] == "c2pa_tampered"
    assert "assertion.dataHash.mismatch" in result["tampered.jpg"]["reason"]


# ----------------------------------------------------------------- 3. XMP as RDF/XML

ELEMENT_RESOURCE = _packet(
    '<rdf:Description rdf:about="" xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/">'
    f'<Iptc4xmpExt:DigitalSourceType rdf:resource="{IPTC}trainedAlgorithmicMedia"/>'
    "</rdf:Description>"
)
OTHER_PREFIX = _packet(
    "<rdf:Description rdf:about='' xmlns:ext='http://iptc.org/std/Iptc4xmpExt/2008-02-29/' "
    f"ext:DigitalSourceType='{IPTC}compositeWithTrainedAlgorithmicMedia'/>",
    quote="'",
)
SEQ_CREATOR = _packet(
    '<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/">'
    "<xmp:CreatorTool><rdf:Seq><rdf:li>Stable Diffusion XL</rdf:li></rdf:Seq></xmp:CreatorTool>"
    "</rdf:Description>"
)


@pytest.mark.parametrize(
    ("packet", "origin", "container"),
    [
        (EXIFTOOL_AI, "synthetic", "jpeg"),
        (EXIFTOOL_AI, "synthetic", "png"),
        (ADOBE_HUMAN, "human", "jpeg"),
        (ADOBE_HUMAN, "human", "png"),
        (ELEMENT_RESOURCE, "synthetic", "jpeg"),
        (OTHER_PREFIX, "synthetic", "png"),
        (SEQ_CREATOR, "synthetic", "jpeg"),
    ],
    ids=["exiftool-jpeg", "exiftool-png", "adobe-jpeg", "adobe-png", "resource", "prefix", "seq"],
)
def test_xmp_in_every_rdf_form(packet: str, origin: str, container: str) -> None:
    data = _jpeg(packet, seed=20) if container == "jpeg" else _png(packet, seed=20)
    row = _row(data)
    assert row["origin"] == origin, row["evidence"]
    assert row["provenance_errors"] is None


def test_xmp_is_read_by_namespace_not_by_the_look_of_the_text() -> None:
    # a prefix spelled Iptc4xmpExt but bound elsewhere, and a property inside a comment
    decoy = _packet(
        '<rdf:Description rdf:about="" xmlns:Iptc4xmpExt="http://example.com/not-iptc/">'
        f'<!-- Iptc4xmpExt:DigitalSourceType="{IPTC}digitalCapture" -->'
        f"<Iptc4xmpExt:DigitalSourceType>{IPTC}digitalCapture</Iptc4xmpExt:DigitalSourceType>"
        "</rdf:Description>"
    )
    assert _row(_jpeg(decoy, seed=21))["origin"] == "unknown"
    parsed = X.parse(ADOBE_HUMAN)
    assert parsed.get(X.IPTC_EXT, "DigitalSourceType") == IPTC + "digitalCapture"
    assert X.parse(EXIFTOOL_AI).values(X.DC, "subject") == ("landscape", "NoAI")


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:CreatorTool="&lol9;"/>
</rdf:RDF></x:xmpmeta>"""


def test_a_billion_laughs_xmp_is_a_row_note_not_an_expansion(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "lol.jpg").write_bytes(_jpeg(BILLION_LAUGHS, seed=22))
    (src / "lol.png").write_bytes(_png(BILLION_LAUGHS, seed=22))
    rows = _scan(src, tmp_path / "scan")
    for name in ("lol.jpg", "lol.png"):
        row = rows[name]
        assert row["origin"] == "unknown" and row["decodable"] is True
        assert "EntitiesForbidden" in row["provenance_errors"], row["provenance_errors"]


# ----------------------------------------------------------------- 4. rights signals


def test_training_permissions_are_read_and_respected_end_to_end(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    base = _jpeg(seed=23)
    (src / "c2pa-notallowed.jpg").write_bytes(
        sign(base, [created("digitalCapture"), training_mining("notAllowed")])
    )
    (src / "c2pa-allowed.jpg").write_bytes(
        sign(_jpeg(seed=24), [created("digitalCapture"), training_mining("allowed")])
    )
    (src / "c2pa-legacy-constrained.jpg").write_bytes(
        sign(
            _jpeg(seed=25),
            [created("digitalCapture"), training_mining("constrained", "c2pa.training-mining")],
        )
    )
    (src / "xmp-plus.jpg").write_bytes(_jpeg(ADOBE_HUMAN, seed=26))
    (src / "plain.jpg").write_bytes(_jpeg(seed=27))
    rows = _scan(src, tmp_path / "scan")
    got = {k: (r["rights_training"], r["rights_source"]) for k, r in rows.items()}
    assert got == {
        "c2pa-notallowed.jpg": (
            "notAllowed",
            "c2pa cawg.training-mining cawg.ai_generative_training",
        ),
        "c2pa-allowed.jpg": ("allowed", "c2pa cawg.training-mining cawg.ai_generative_training"),
        "c2pa-legacy-constrained.jpg": (
            "constrained",
            "c2pa c2pa.training-mining c2pa.ai_generative_training",
        ),
        "xmp-plus.jpg": ("notAllowed", "xmp plus:DataMining DMI-PROHIBITED-AIMLTRAINING"),
        "plain.jpg": (None, None),
    }
    assert rows["c2pa-notallowed.jpg"]["c2pa_state"] == "valid"
    code, result = _enforce(
        tmp_path / "scan", "rules:\n  - rule: respect_opt_out\n", tmp_path / "out"
    )
    assert code == 0
    codes = {k: v.get("reason_code") for k, v in result.items()}
    assert codes == {
        "c2pa-notallowed.jpg": "opted_out",
        "c2pa-allowed.jpg": None,
        "c2pa-legacy-constrained.jpg": "constrained_use",
        "xmp-plus.jpg": "opted_out",
        "plain.jpg": None,
    }
    code, result = _enforce(
        tmp_path / "scan",
        "rules:\n  - rule: respect_opt_out\n    constrained: keep\n",
        tmp_path / "out2",
    )
    assert result["c2pa-legacy-constrained.jpg"]["kept"]


def test_sidecar_opt_outs_and_the_most_restrictive_source_wins(tmp_path: Path) -> None:
    shard = _shard(
        tmp_path / "web-000.tar",
        {
            "tagged": (jpeg_bytes(photo(28)), {"tags": ["art", "NoImageAI"]}),
            "declared": (jpeg_bytes(photo(29)), {"ai_training": "notAllowed"}),
            "allowed": (jpeg_bytes(photo(30)), {"ai_training": "allowed"}),
            # allowed in the sidecar, prohibited in the file's XMP: the opt-out wins
            "both": (_jpeg(ADOBE_HUMAN, seed=31), {"ai_training": True}),
            "none": (jpeg_bytes(photo(32)), {"caption": "noai is just a word here"}),
        },
    )
    rows = _scan(shard, tmp_path / "scan")
    got = {
        k.removesuffix(".jpg"): (r["rights_training"], r["rights_source"]) for k, r in rows.items()
    }
    assert got == {
        "tagged": ("notAllowed", "sidecar tag noimageai"),
        "declared": ("notAllowed", "sidecar ai_training='notAllowed'"),
        "allowed": ("allowed", "sidecar ai_training='allowed'"),
        "both": ("notAllowed", "xmp plus:DataMining DMI-PROHIBITED-AIMLTRAINING"),
        "none": (None, None),
    }
