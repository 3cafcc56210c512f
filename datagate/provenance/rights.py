"""Rights signals: whether an image's rights holder allows its use for generative AI training.

Read, never inferred, from:

* **C2PA / CAWG** the training-and-data-mining assertion (label ``cawg.training-mining``,
  CAWG 1.x; ``c2pa.training-mining`` in C2PA 1.x): its ``entries`` map
  ``cawg.ai_generative_training`` (or ``c2pa.``-prefixed) to ``{"use": "allowed" |
  "notAllowed" | "constrained"}``. The generative-training entry decides; without one, the
  ``ai_training`` entry. Read from the active manifest whether or not it validates: an
  opt-out is honoured whoever wrote it.
* **XMP** PLUS ``plus:DataMining`` (``http://ns.useplus.org/ldf/vocab/DMI-...``, as IPTC
  Photo Metadata 2023.1 recommends), and ``noai`` / ``noimageai`` keywords in ``dc:subject``.
* **Sidecars** (WebDataset ``.json``): ``ai_training`` (allowed / notAllowed / constrained,
  or true / false), and ``noai`` / ``noimageai`` among ``tags`` or ``keywords`` or in
  ``robots``.

Several sources combine to the most restrictive (notAllowed > constrained > allowed): the
costly error is training on work whose holder opted out. Per CAWG, ``constrained`` means no
unconditional permission (the ``respect_opt_out`` rule decides what to do with it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from datagate.provenance import xmp as X

USES = ("allowed", "constrained", "notAllowed")  # least to most restrictive
TRAINING_MINING_LABELS = ("cawg.training-mining", "c2pa.training-mining")
#: PLUS Data Mining vocabulary (the part after ``.../ldf/vocab/``) -> use for AI training
PLUS_DATA_MINING = {
    "DMI-UNSPECIFIED": None,
    "DMI-ALLOWED": "allowed",
    "DMI-PROHIBITED-AIMLTRAINING": "notAllowed",
    "DMI-PROHIBITED-GENAIMLTRAINING": "notAllowed",
    "DMI-PROHIBITED-EXCEPTSEARCHENGINEINDEXING": "notAllowed",
    "DMI-PROHIBITED": "notAllowed",
    "DMI-PROHIBITED-SEECONSTRAINT": "constrained",
    "DMI-PROHIBITED-SEEEMBEDDEDRIGHTSEXPR": "constrained",
    "DMI-PROHIBITED-SEELINKEDRIGHTSEXPR": "constrained",
}
OPT_OUT_TAGS = frozenset({"noai", "noimageai"})


@dataclass(frozen=True)
class Rights:
    """Generative-training permission (None: nothing declared) and where it was read."""

    training: str | None = None
    source: str | None = None


def combine(found: list[Rights]) -> Rights:
    """The most restrictive declaration; its sources joined when several say the same."""
    declared = [r for r in found if r.training in USES]
    if not declared:
        return Rights()
    worst = max(USES.index(str(r.training)) for r in declared)
    sources = [str(r.source) for r in declared if r.training == USES[worst]]
    return Rights(USES[worst], "; ".join(dict.fromkeys(sources)))


def _use(value: Any) -> str | None:
    if isinstance(value, bool):
        return "allowed" if value else "notAllowed"
    text = str(value or "").strip()
    folded = {u.lower(): u for u in USES}
    return folded.get(text.replace("_", "").replace(" ", "").lower())


def from_manifest(manifest: dict[str, Any]) -> Rights:
    """The training-and-data-mining assertion of one C2PA manifest (JSON from c2pa-python)."""
    for assertion in manifest.get("assertions", []) or []:
        label = str(assertion.get("label", ""))
        base = re.sub(r"(\.v\d+)?(__\d+)?$", "", label)  # version and instance suffixes
        if base not in TRAINING_MINING_LABELS:
            continue
        data = assertion.get("data") or {}
        entries = data.get("entries") if isinstance(data.get("entries"), dict) else data
        if not isinstance(entries, dict):
            continue
        prefix = base.split(".", 1)[0]
        for entry in ("ai_generative_training", "ai_training"):
            item = entries.get(f"{prefix}.{entry}") or entries.get(f"cawg.{entry}")
            item = item or entries.get(f"c2pa.{entry}")
            use = _use(item.get("use")) if isinstance(item, dict) else None
            if use is not None:
                return Rights(use, f"c2pa {base} {prefix}.{entry}")
    return Rights()


def from_xmp(packet: X.Xmp) -> Rights:
    found: list[Rights] = []
    for value in packet.values(X.PLUS, "DataMining"):
        code = value.rsplit("/", 1)[-1].strip()
        use = PLUS_DATA_MINING.get(code)
        if use is not None:
            found.append(Rights(use, f"xmp plus:DataMining {code}"))
    tags = {v.strip().lower() for v in packet.values(X.DC, "subject")}
    for tag in sorted(tags & OPT_OUT_TAGS):
        found.append(Rights("notAllowed", f"xmp dc:subject {tag}"))
    return combine(found)


def from_sidecar(meta: dict[str, Any]) -> Rights:
    doc = meta.get("json")
    if not isinstance(doc, dict):
        return Rights()
    found: list[Rights] = []
    if "ai_training" in doc:
        use = _use(doc["ai_training"])
        if use is not None:
            found.append(Rights(use, f"sidecar ai_training={doc['ai_training']!r}"))
    words: list[str] = []
    for key in ("tags", "keywords"):
        value = doc.get(key)
        if isinstance(value, str):
            words += value.replace(";", ",").split(",")
        elif isinstance(value, list):
            words += [str(v) for v in value]
    robots = doc.get("robots")
    if isinstance(robots, str):
        words += robots.split(",")
    for tag in sorted({w.strip().lower() for w in words} & OPT_OUT_TAGS):
        found.append(Rights("notAllowed", f"sidecar tag {tag}"))
    return combine(found)
