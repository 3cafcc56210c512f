"""Provenance: read every origin signal an image carries and reduce it to one verdict.

Evidence is read, never inferred from pixels:

* **C2PA** manifests (c2pa-python): validation state and codes, claim generator, the IPTC
  ``digitalSourceType`` of the active manifest's actions and of every other manifest in the
  store (ingredients). Remote manifests are never fetched: a file that only points to one
  is recorded as ``remote`` (unverified).
* **XMP** (parsed as RDF/XML by :mod:`datagate.provenance.xmp`, defused against entity
  expansion): IPTC ``Iptc4xmpExt:DigitalSourceType``, ``xmp:CreatorTool``, ``tiff:Software``,
  ``dcterms:provenance``. An unreadable packet is a row note, never a crash.
* **EXIF**: Software, Make/Model, ImageDescription, UserComment, MakerNote, Artist.
* **Generator metadata**: PNG text chunks of AUTOMATIC1111 (``parameters``), ComfyUI
  (``prompt``/``workflow``, also in WEBP EXIF Make/Model), InvokeAI (``invokeai_metadata``,
  ``sd-metadata``, ``Dream``), Fooocus (``fooocus_scheme``), NovelAI (``Software``/``Source``),
  and A1111's "stealth" metadata hidden in the alpha channel's least significant bits.
* **Sidecars**: WebDataset ``.json`` keys ``origin``, ``ai_generated``/``is_synthetic``,
  ``digital_source_type``, ``generator``/``model`` (see :data:`SIDECAR_KEYS`).

A generation tool named anywhere (a sidecar's ``generator``/``model``, XMP CreatorTool,
EXIF Software, a PNG ``Software``/``Source`` text chunk, a C2PA claim generator) is
synthetic evidence, whatever else the file declares; the disagreement is a conflict.

Verdict (documented precedence): each piece of evidence says ``human``, ``synthetic`` or
nothing, with a strength. The strongest claims decide (definitive > strong > weak); when
claims of equal top strength disagree, ``synthetic`` wins (a false "human" is the costly
error), and any disagreement is recorded as a conflict. Strengths as read:

* definitive: a valid C2PA manifest from a trusted signer; generator metadata written by a
  generation tool (parameters, workflows, stealth metadata);
* strong: a valid C2PA manifest whose signer is not on a trust list (test and self-signed
  certificates), IPTC DigitalSourceType in XMP, an AI tool named in Software/CreatorTool/
  MakerNote or in a C2PA claim generator, a dataset sidecar's declaration;
* weak: camera EXIF (Make/Model, "DIGITAL CAMERA" descriptions) — trivially copied, so
  it never outweighs anything else; an AI source type found only in an ingredient.

Unsigned human claims: anyone can write one XMP line or sidecar key, so a claim of *human*
origin that no signature protects (every source but a valid C2PA manifest, and a reviewer's
decision) weighs as ``weak`` when the verdict is decided (``unsigned_human="weak"``, the
default and the policies' ``unsigned_human`` key); ``"strong"`` keeps the strengths as
read. Synthetic claims keep their strength: a false "human" is the costly error. The
evidence JSON keeps the strengths as read, so a policy can decide again.

Tampering: a C2PA manifest that fails an integrity check (a ``*.mismatch`` code such as
``assertion.dataHash.mismatch``: the file changed after signing) says nothing itself, marks
the verdict ``tampered``, caps every human claim of the file at ``weak`` and records a
conflict when there is one. Other invalid manifests (expired or unknown credentials) say
nothing and are recorded.
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from datagate.provenance import rights as R
from datagate.provenance import xmp as X

STRENGTH_RANK = {"weak": 1, "strong": 2, "definitive": 3}
IPTC_PREFIX = "http://cv.iptc.org/newscodes/digitalsourcetype/"
SYNTHETIC_SOURCE_TYPES = frozenset(
    {
        "trainedAlgorithmicMedia",
        "compositeWithTrainedAlgorithmicMedia",
        "algorithmicMedia",
        "compositeSynthetic",
    }
)
HUMAN_SOURCE_TYPES = frozenset(
    {
        "digitalCapture",
        "negativeFilm",
        "positiveFilm",
        "print",
        "minorHumanEdits",
        "humanEdits",
        "compositeCapture",
        "digitalArt",
        "screenCapture",
        "virtualRecording",
    }
)
#: Names of generation tools looked for in Software, CreatorTool, MakerNote, claim generators.
AI_TOOLS = (
    ("firefly", "Adobe Firefly"),
    ("dall-e", "DALL-E"),
    ("dall·e", "DALL-E"),
    ("openai", "OpenAI"),
    ("chatgpt", "ChatGPT"),
    ("midjourney", "Midjourney"),
    ("stable diffusion", "Stable Diffusion"),
    ("stablediffusion", "Stable Diffusion"),
    ("novelai", "NovelAI"),
    ("comfyui", "ComfyUI"),
    ("automatic1111", "AUTOMATIC1111"),
    ("invokeai", "InvokeAI"),
    ("fooocus", "Fooocus"),
    ("imagen", "Imagen"),
    ("gemini", "Gemini"),
    ("leonardo.ai", "Leonardo.Ai"),
    ("ideogram", "Ideogram"),
    ("flux", "FLUX"),
)
#: WebDataset sidecar keys read (in the sample's ``.json``).
SIDECAR_KEYS = (
    "origin",
    "ai_generated",
    "is_synthetic",
    "digital_source_type",
    "generator",
    "model",
)
MAX_TEXT = 1 << 20  # text chunks larger than this are not parsed (recorded as oversized)
#: Sources whose human claims a signature protects (``review``: the policy's own reviewers).
SIGNED_SOURCES = frozenset({"c2pa", "review"})
#: C2PA failure codes that mean the file or manifest changed after signing (besides every
#: code ending in ``.mismatch``).
TAMPER_CODES = frozenset(
    {
        "assertion.missing",
        "assertion.hashedURI.missing",
        "assertion.dataHash.malformed",
        "claimSignature.missing",
    }
)
UnsignedHuman = Literal["weak", "strong"]

_EXIF = {
    "make": 0x010F,
    "model": 0x0110,
    "software": 0x0131,
    "description": 0x010E,
    "artist": 0x013B,
    "user_comment": 0x9286,
    "maker_note": 0x927C,
}


@dataclass(frozen=True)
class Evidence:
    """One signal's statement about an image's origin."""

    source: str  # c2pa, xmp, exif, png-text, stealth, sidecar, camera
    says: str | None  # "human", "synthetic", or None (recorded, but claims nothing)
    strength: str  # definitive, strong, weak
    detail: str
    generator: str | None = None
    error: bool = False
    tampered: bool = False  # a C2PA manifest whose integrity checks fail

    def weighed(self, unsigned_human: UnsignedHuman, tampered: bool) -> str:
        """The strength this evidence decides with (see the module docstring)."""
        if self.says != "human" or self.source == "review":
            return self.strength
        if tampered or (unsigned_human == "weak" and self.source not in SIGNED_SOURCES):
            return "weak"
        return self.strength


@dataclass(frozen=True)
class Verdict:
    origin: str  # human, synthetic, unknown
    strength: str | None
    generator: str | None
    conflict: bool
    evidence: tuple[Evidence, ...]
    tampered: bool = False

    def evidence_json(self) -> str | None:
        return json.dumps([asdict(e) for e in self.evidence]) if self.evidence else None


def decide(evidence: list[Evidence], unsigned_human: UnsignedHuman = "weak") -> Verdict:
    """Reduce evidence to one verdict by the documented precedence; ``unsigned_human``
    says what an unsigned claim of human origin weighs."""
    tampered = any(e.tampered for e in evidence)
    claims = [(e, e.weighed(unsigned_human, tampered)) for e in evidence]
    claims = [(e, s) for e, s in claims if e.says in ("human", "synthetic")]
    generator = _generator(evidence)
    if not claims:
        return Verdict("unknown", None, generator, False, tuple(evidence), tampered)
    top = max(STRENGTH_RANK[s] for _, s in claims)
    leading = [e for e, s in claims if STRENGTH_RANK[s] == top]
    origin = "synthetic" if any(e.says == "synthetic" for e in leading) else "human"
    says = {e.says for e, _ in claims}
    conflict = len(says) > 1 or (tampered and "human" in says)
    strength = next(s for s, r in STRENGTH_RANK.items() if r == top)
    return Verdict(origin, strength, generator, conflict, tuple(evidence), tampered)


def _generator(evidence: list[Evidence]) -> str | None:
    """The strongest synthetic claim's generator, else any generator the file names (so that
    a policy's ``reject_generators`` sees a generator even where origin says human)."""
    for synthetic in (True, False):
        ranked = sorted(
            (e for e in evidence if e.generator and (e.says == "synthetic") == synthetic),
            key=lambda e: -STRENGTH_RANK[e.strength],
        )
        if ranked:
            return ranked[0].generator
    return None


def _source_type(value: str | None) -> str | None:
    if not value:
        return None
    return value.rsplit("/", 1)[-1].strip() or None


def _says_for_source_type(code: str | None) -> str | None:
    if code in SYNTHETIC_SOURCE_TYPES:
        return "synthetic"
    if code in HUMAN_SOURCE_TYPES:
        return "human"
    return None


def ai_tool(text: str | None) -> str | None:
    if not text:
        return None
    low = text.lower()
    return next((name for needle, name in AI_TOOLS if needle in low), None)


# --------------------------------------------------------------------------- C2PA


@dataclass
class C2paResult:
    state: str  # absent, valid, invalid, remote, error
    codes: list[str]
    claim_generator: str | None = None
    source_type: str | None = None
    ingredient_source_types: list[str] | None = None
    trusted: bool | None = None
    error: str | None = None
    agent: str | None = None  # softwareAgent of the action declaring a synthetic source type
    tampered: bool = False  # integrity checks fail: the file changed after signing
    rights: R.Rights = field(default_factory=R.Rights)  # the training-mining assertion


_MIME = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "TIFF": "image/tiff",
    "AVIF": "image/avif",
    "GIF": "image/gif",
    "MPO": "image/jpeg",
    "HEIF": "image/heif",
}
_context: Any = None


def _c2pa_context() -> Any:
    """A c2pa Context that never fetches remote manifests or OCSP responses."""
    global _context
    if _context is None:
        import c2pa

        settings = c2pa.Settings.from_dict(
            {"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}}
        )
        _context = c2pa.Context(settings)
    return _context


def read_c2pa(data: bytes, fmt: str | None, xmp: str | X.Xmp | None) -> C2paResult:
    """Read and validate an embedded C2PA manifest store without any network access."""
    remote = _remote_manifest(X.parse(xmp) if isinstance(xmp, str) else xmp)

    def nothing_embedded() -> C2paResult:
        if remote is None:
            return C2paResult("absent", [])
        return C2paResult(
            "remote",
            ["manifest.remote.notFetched"],
            error=f"remote manifest {remote} (not fetched, unverified)",
        )

    if b"jumb" not in data and b"c2pa" not in data:
        return nothing_embedded()
    mime = _MIME.get(fmt or "", "image/jpeg")
    try:
        import io

        import c2pa

        with c2pa.Reader(mime, io.BytesIO(data), context=_c2pa_context()) as reader:
            store = json.loads(reader.json())
    except Exception as exc:  # every reader failure is evidence, never a crash
        text = f"{type(exc).__name__}: {exc}"
        if "ManifestNotFound" in text or "no JUMBF" in text:
            return nothing_embedded()
        if remote is not None or "Remote:" in text:
            return C2paResult(
                "remote",
                ["manifest.remote.notFetched"],
                error=f"remote manifest (not fetched, unverified): {text[:200]}",
            )
        return C2paResult("error", [], error=text[:300])
    return _summarise_store(store)


def _remote_manifest(xmp: X.Xmp | None) -> str | None:
    if xmp is None:
        return None
    value = xmp.get(X.DCTERMS, "provenance")
    return value if value and value.lower().startswith(("http://", "https://")) else None


def is_tamper_code(code: str) -> bool:
    return code.endswith(".mismatch") or code in TAMPER_CODES


def _manifest_source_types(manifest: dict[str, Any]) -> list[tuple[str, str | None]]:
    """(digitalSourceType code, softwareAgent name) of every action that declares one."""
    found: list[tuple[str, str | None]] = []
    for assertion in manifest.get("assertions", []) or []:
        label = str(assertion.get("label", ""))
        if not label.startswith("c2pa.actions"):
            continue
        for action in (assertion.get("data") or {}).get("actions", []) or []:
            code = _source_type(action.get("digitalSourceType"))
            if code:
                agent = action.get("softwareAgent")
                if isinstance(agent, dict):
                    agent = agent.get("name")
                found.append((code, str(agent) if agent else None))
    return found


def _summarise_store(store: dict[str, Any]) -> C2paResult:
    manifests: dict[str, Any] = store.get("manifests") or {}
    active_label = store.get("active_manifest")
    active = manifests.get(active_label, {}) if active_label else {}
    codes: list[str] = []
    for status in store.get("validation_status", []) or []:
        code = status.get("code")
        if code:
            codes.append(str(code))
    results = store.get("validation_results") or {}
    for section in ("activeManifest",):
        for status in (results.get(section) or {}).get("failure", []) or []:
            code = status.get("code")
            if code and code not in codes:
                codes.append(str(code))
    # The reader's own verdict decides validity; codes ending in ".untrusted" are about the
    # signer's trust list, not the integrity of the manifest.
    state_text = str(store.get("validation_state", "")).lower()
    untrusted = [c for c in codes if c.endswith(".untrusted")]
    if state_text in ("valid", "trusted"):
        state = "valid"
    elif state_text == "invalid":
        state = "invalid"
    else:
        state = "invalid" if any(c not in untrusted for c in codes) else "valid"
    trusted = state == "valid" and (state_text == "trusted" or not untrusted)
    generator = active.get("claim_generator")
    if not generator:
        info = active.get("claim_generator_info") or []
        if info and isinstance(info, list):
            generator = " ".join(
                str(i.get("name", "")) + "/" + str(i.get("version", ""))
                for i in info
                if isinstance(i, dict)
            )
    active_types = _manifest_source_types(active)
    ingredient_types: list[str] = []
    for label, manifest in manifests.items():
        if label != active_label:
            ingredient_types.extend(code for code, _ in _manifest_source_types(manifest))
    synthetic = [(c, a) for c, a in active_types if c in SYNTHETIC_SOURCE_TYPES]
    chosen = synthetic[0] if synthetic else (active_types[0] if active_types else (None, None))
    agent = next((a for _, a in synthetic if a), None)
    tampered = state == "invalid" and any(is_tamper_code(c) for c in codes)
    return C2paResult(
        state,
        codes,
        generator,
        chosen[0],
        sorted(set(ingredient_types)),
        trusted,
        agent=agent,
        tampered=tampered,
        rights=R.from_manifest(active),
    )


def c2pa_evidence(result: C2paResult) -> list[Evidence]:
    if result.state == "absent":
        return []
    if result.state in ("remote", "error"):
        return [
            Evidence(
                "c2pa", None, "weak", result.error or result.state, error=result.state == "error"
            )
        ]
    codes = ", ".join(result.codes) or "no validation failures"
    if result.state == "invalid":
        if result.tampered:
            detail = f"tampered: invalid manifest ({codes}), the file changed after signing"
            return [Evidence("c2pa", None, "weak", detail, tampered=True)]
        return [Evidence("c2pa", None, "weak", f"invalid manifest ({codes}); not counted")]
    strength = "definitive" if result.trusted else "strong"
    trust = "trusted signer" if result.trusted else "signer not on a trust list"
    out: list[Evidence] = []
    says = _says_for_source_type(result.source_type)
    tool = ai_tool(result.claim_generator)
    if says is not None:
        generator = (result.agent or tool) if says == "synthetic" else None
        out.append(
            Evidence(
                "c2pa", says, strength, f"valid manifest ({trust}): {result.source_type}", generator
            )
        )
    elif any(t in SYNTHETIC_SOURCE_TYPES for t in result.ingredient_source_types or []):
        out.append(
            Evidence(
                "c2pa",
                "synthetic",
                "weak",
                f"valid manifest ({trust}); an ingredient is "
                + ", ".join(result.ingredient_source_types or []),
            )
        )
    else:
        out.append(
            Evidence(
                "c2pa",
                None,
                strength,
                f"valid manifest ({trust}) without a digitalSourceType; "
                f"claim generator {result.claim_generator}",
            )
        )
    if tool is not None and says != "synthetic":
        out.append(
            Evidence(
                "c2pa", "synthetic", "strong", f"claim generator {result.claim_generator}", tool
            )
        )
    return out


# --------------------------------------------------------------------------- metadata


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        raw = value
        for prefix in (b"ASCII\x00\x00\x00", b"UNICODE\x00", b"\x00\x00\x00\x00\x00\x00\x00\x00"):
            if raw.startswith(prefix):
                raw = raw[len(prefix) :]
                if prefix == b"UNICODE\x00":
                    for enc in ("utf-16-be", "utf-16-le"):
                        try:
                            return raw.decode(enc).strip("\x00").strip()
                        except UnicodeDecodeError:
                            continue
                break
        return raw.decode("utf-8", "replace").strip("\x00").strip()
    return str(value).strip()


def xmp_text(info: dict[str, Any]) -> str | None:
    """The XMP packet Pillow found (JPEG APP1, PNG iTXt, WEBP, TIFF), as text."""
    xmp = info.get("xmp") or info.get("XML:com.adobe.xmp")
    if isinstance(xmp, bytes):
        return xmp.decode("utf-8", "replace")
    return xmp if isinstance(xmp, str) else None


def _ckpt_from_comfy(prompt: str) -> str | None:
    try:
        graph = json.loads(prompt)
    except ValueError:
        return None
    nodes = graph.values() if isinstance(graph, dict) else graph if isinstance(graph, list) else []
    for node in nodes:
        inputs = node.get("inputs", {}) if isinstance(node, dict) else {}
        if not isinstance(inputs, dict):
            continue
        for key in ("ckpt_name", "unet_name", "model_name"):
            value = inputs.get(key)
            if isinstance(value, str) and value:
                return value
    return None


def _a1111_model(params: str) -> str | None:
    m = re.search(r"Model: ([^,\n]+)", params)
    return m.group(1).strip() if m else None


def metadata_evidence(
    info: dict[str, Any], exif: dict[int, Any], alpha_lsb: bytes | None
) -> list[Evidence]:
    out: list[Evidence] = []
    text = {k: v for k, v in info.items() if isinstance(v, str)}
    oversized = [k for k, v in text.items() if len(v) > MAX_TEXT]
    for key in oversized:
        out.append(
            Evidence(
                "png-text",
                None,
                "weak",
                f"text chunk {key!r} of {len(text[key]):,} characters not parsed",
                error=True,
            )
        )
        del text[key]

    # generator tools (definitive: written by the tool at generation time)
    params = text.get("parameters")
    if "fooocus_scheme" in text or (
        params and params.lstrip().startswith("{") and "fooocus" in params.lower()
    ):
        out.append(Evidence("png-text", "synthetic", "definitive", "Fooocus parameters", "Fooocus"))
    elif params and ("Steps:" in params or "Sampler:" in params):
        out.append(
            Evidence(
                "png-text",
                "synthetic",
                "definitive",
                "AUTOMATIC1111 parameters",
                _a1111_model(params) or "AUTOMATIC1111",
            )
        )
    if "prompt" in text or "workflow" in text:
        ckpt = _ckpt_from_comfy(text.get("prompt", "")) or _ckpt_from_comfy(
            text.get("workflow", "")
        )
        out.append(
            Evidence(
                "png-text", "synthetic", "definitive", "ComfyUI prompt/workflow", ckpt or "ComfyUI"
            )
        )
    if any(k in text for k in ("invokeai_metadata", "sd-metadata", "Dream", "invokeai_graph")):
        out.append(Evidence("png-text", "synthetic", "definitive", "InvokeAI metadata", "InvokeAI"))
    if (text.get("Software") or "").strip().lower() == "novelai" or "novelai" in (
        text.get("Source") or ""
    ).lower():
        out.append(Evidence("png-text", "synthetic", "definitive", "NovelAI metadata", "NovelAI"))
    else:
        for key in ("Software", "Source"):
            tool = ai_tool(text.get(key))
            if tool is not None:
                detail = f"text chunk {key} names {tool}"
                out.append(Evidence("png-text", "synthetic", "strong", detail, tool))

    stealth = _stealth_pnginfo(alpha_lsb)
    if stealth is not None:
        out.append(
            Evidence(
                "stealth",
                "synthetic",
                "definitive",
                "AUTOMATIC1111 stealth metadata in alpha LSBs",
                _a1111_model(stealth) or "AUTOMATIC1111",
            )
        )

    # EXIF
    make, model = _text(exif.get(_EXIF["make"])), _text(exif.get(_EXIF["model"]))
    software = _text(exif.get(_EXIF["software"]))
    description = _text(exif.get(_EXIF["description"]))
    comment = _text(exif.get(_EXIF["user_comment"]))
    maker_note = _text(exif.get(_EXIF["maker_note"]))
    if (make and make.startswith("workflow:")) or (model and model.startswith("prompt:")):
        prompt = model[len("prompt:") :] if model and model.startswith("prompt:") else ""
        out.append(
            Evidence(
                "exif",
                "synthetic",
                "definitive",
                "ComfyUI prompt/workflow in EXIF",
                _ckpt_from_comfy(prompt) or "ComfyUI",
            )
        )
        make = model = None
    if comment and ("Steps:" in comment and "Sampler:" in comment):
        out.append(
            Evidence(
                "exif",
                "synthetic",
                "definitive",
                "AUTOMATIC1111 parameters in EXIF UserComment",
                _a1111_model(comment) or "AUTOMATIC1111",
            )
        )
    for label, value in (
        ("Software", software),
        ("MakerNote", maker_note),
        ("ImageDescription", description),
    ):
        tool = ai_tool(value)
        if tool is not None:
            out.append(Evidence("exif", "synthetic", "strong", f"EXIF {label} names {tool}", tool))

    # XMP
    text_xmp = xmp_text(info)
    if text_xmp:
        out += xmp_evidence(X.parse(text_xmp))

    # camera capture (weak: trivially copied)
    camera_description = description and "digital camera" in description.lower()
    if (make and model) or camera_description:
        what = f"{make} {model}".strip() if make and model else description
        out.append(Evidence("camera", "human", "weak", f"camera EXIF: {what}"))
    return out


def xmp_evidence(packet: X.Xmp) -> list[Evidence]:
    """IPTC DigitalSourceType and generation tools named in an XMP packet."""
    if packet.error is not None:
        return [Evidence("xmp", None, "weak", packet.error, error=True)]
    out: list[Evidence] = []
    dst = _source_type(packet.get(X.IPTC_EXT, "DigitalSourceType"))
    if dst:
        says = _says_for_source_type(dst)
        out.append(Evidence("xmp", says, "strong", f"IPTC DigitalSourceType {dst}"))
    for namespace, label in ((X.XMP, "CreatorTool"), (X.TIFF, "Software")):
        for name in packet.values(namespace, label):
            tool = ai_tool(name)
            if tool is not None:
                out.append(Evidence("xmp", "synthetic", "strong", f"{label} {name}", tool))
    return out


_STEALTH = (b"stealth_pnginfo", b"stealth_pngcomp")


def _stealth_pnginfo(alpha_lsb: bytes | None) -> str | None:
    """Decode A1111's stealth metadata: signature, 32-bit bit length, then the payload."""
    if not alpha_lsb or len(alpha_lsb) < 19:
        return None
    head = alpha_lsb[:15]
    if head not in _STEALTH:
        return None
    n_bits = int.from_bytes(alpha_lsb[15:19], "big")
    payload = alpha_lsb[19 : 19 + n_bits // 8]
    if len(payload) < n_bits // 8:
        return None
    try:
        raw = gzip.decompress(payload) if head == b"stealth_pngcomp" else payload
        return raw.decode("utf-8", "replace")
    except (OSError, EOFError):
        return None


def sidecar_evidence(meta: dict[str, Any]) -> list[Evidence]:
    """Declarations in a WebDataset sample's ``.json`` sidecar (keys in SIDECAR_KEYS)."""
    doc = meta.get("json")
    if not isinstance(doc, dict):
        return []
    out: list[Evidence] = []
    generator = doc.get("generator") or doc.get("model")
    generator = str(generator) if generator else None
    origin = str(doc.get("origin", "")).strip().lower()
    if origin in ("human", "real", "photo", "camera"):
        out.append(Evidence("sidecar", "human", "strong", f"sidecar origin={origin!r}"))
    elif origin in ("synthetic", "ai", "generated"):
        out.append(
            Evidence("sidecar", "synthetic", "strong", f"sidecar origin={origin!r}", generator)
        )
    for key in ("ai_generated", "is_synthetic"):
        if isinstance(doc.get(key), bool):
            says = "synthetic" if doc[key] else "human"
            out.append(
                Evidence(
                    "sidecar",
                    says,
                    "strong",
                    f"sidecar {key}={doc[key]}",
                    generator if doc[key] else None,
                )
            )
    code = _source_type(doc.get("digital_source_type"))
    declared = _says_for_source_type(code)
    if declared is not None:
        out.append(
            Evidence(
                "sidecar",
                declared,
                "strong",
                f"sidecar digital_source_type={code}",
                generator if declared == "synthetic" else None,
            )
        )
    if generator and not any(e.says == "synthetic" for e in out):
        tool = ai_tool(generator)
        if tool is not None:  # a named generation tool is synthetic evidence, whatever else
            detail = f"sidecar generator={generator!r} names {tool}"
            out.append(Evidence("sidecar", "synthetic", "strong", detail, generator))
        else:
            detail = f"sidecar generator={generator!r}"
            out.append(Evidence("sidecar", None, "weak", detail, generator))
    return out


#: Where a stated generation is read: WebDataset ``.json`` sidecars and Parquet metadata
#: columns (``generation``), PNG/WEBP text chunks (``datagate:generation``).
GENERATION_KEYS = ("generation", "datagate:generation")


def generation(
    meta: dict[str, Any], info: dict[str, Any], verdict: Verdict
) -> tuple[int | None, str | None]:
    """(generation, where it came from): 0 for human-made, n+1 for the output of a model
    trained on data of generation n.

    A stated generation wins; otherwise an image with definitive or strong human evidence is
    generation 0; anything else is unknown (None): a synthetic image's generation cannot be
    inferred from the image.
    """
    doc = meta.get("json") if isinstance(meta.get("json"), dict) else {}
    for where, source in (("sidecar", doc), ("metadata", meta), ("text chunk", info)):
        for key in GENERATION_KEYS:
            value = source.get(key) if isinstance(source, dict) else None
            if value is None or isinstance(value, bool):
                continue
            try:
                number = int(str(value).strip())
            except ValueError:
                continue
            if number >= 0:
                return number, where
    if verdict.origin == "human" and verdict.strength in ("definitive", "strong"):
        return 0, "human provenance"
    return None, None
