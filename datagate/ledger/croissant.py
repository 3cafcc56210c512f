"""Croissant 1.1 metadata (with the RAI extension) for a gate run's kept set.

``croissant.json`` describes ``manifests/kept.parquet``: its sha256, a RecordSet with one
field per manifest column, where the data came from (``prov:wasDerivedFrom``: the scanned
inputs and, for generators the ledger knows, the dataset versions they were trained on),
which generators made the synthetic part (``prov:wasGeneratedBy``), and ``rai:`` fields for
the human/synthetic share and how it was measured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from datagate import __version__
from datagate.contract import KEPT, Report, file_sha256
from datagate.ledger.chain import Ledger

CROISSANT = "croissant.json"
CONFORMS_TO = "http://mlcommons.org/croissant/1.1"
RAI_CONFORMS_TO = "http://mlcommons.org/croissant/RAI/1.0"
DATAGATE_NS = "https://datagate.dev/ns#"

#: The Croissant 1.1 JSON-LD context (as mlcroissant writes it) plus PROV-O and datagate.
CONTEXT: dict[str, Any] = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "arrayShape": "cr:arrayShape",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "containedIn": "cr:containedIn",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/",
    "description": {"@container": "@language"},
    "equivalentProperty": "cr:equivalentProperty",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isArray": "cr:isArray",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "name": {"@container": "@language"},
    "parentField": "cr:parentField",
    "path": "cr:path",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "samplingRate": "cr:samplingRate",
    "sc": "https://schema.org/",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
    "prov": "http://www.w3.org/ns/prov#",
    "datagate": DATAGATE_NS,
}


def data_type(t: pa.DataType) -> str:
    if pa.types.is_boolean(t):
        return "sc:Boolean"
    if pa.types.is_integer(t):
        return "sc:Integer"
    if pa.types.is_floating(t):
        return "sc:Float"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "sc:Date"
    return "sc:Text"


def _pct(x: Any) -> str:
    return f"{x:.1%}" if isinstance(x, (int, float)) else "not measured"


def croissant(
    out: Path,
    report: Report,
    share: dict[str, Any],
    *,
    ledger: Ledger | None = None,
    lineage: dict[str, Any] | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """The Croissant document for ``out``'s kept manifest (already written)."""
    kept_path = out / KEPT
    schema = pq.read_schema(kept_path)
    fields = [
        {
            "@type": "cr:Field",
            "@id": f"kept/{f.name}",
            "name": f.name,
            "dataType": data_type(f.type),
            "source": {"fileObject": {"@id": "kept-manifest"}, "extract": {"column": f.name}},
        }
        for f in schema
        if not (pa.types.is_nested(f.type) or pa.types.is_binary(f.type))
    ]
    counts = report["counts"]
    kept_comp = report["composition"].get("kept", {})
    origin = kept_comp.get("origin", {})
    generators: dict[str, int] = kept_comp.get("generator", {})
    policy = report["policy"]
    models = (lineage or {}).get("models", {})

    derived: list[dict[str, Any]] = [
        {"@id": str(i), "@type": "prov:Entity", "name": "scanned input"}
        for i in report["scan"].get("inputs") or []
    ]
    recorded = ledger.models() if ledger is not None else {}
    generated: list[dict[str, Any]] = []
    for generator, n in generators.items():
        activity: dict[str, Any] = {
            "@type": "prov:Activity",
            "name": f"image generation by {generator}",
            "description": f"{n} kept images name {generator} as their generator",
            "prov:wasAssociatedWith": {"@type": "prov:SoftwareAgent", "name": generator},
        }
        model = recorded.get(generator.strip().lower())
        if model is not None and ledger is not None:
            info = model.payload
            activity["datagate:generation"] = info.get("generation")
            activity["datagate:ledgerEntry"] = f"{model.ref} sha256:{model.hash}"
            for ref in info.get("trained_on", []):
                derived.append(
                    {
                        "@id": f"datagate-ledger:sha256:{ref['hash']}",
                        "@type": "prov:Entity",
                        "name": f"dataset version {ref['ref']} that {generator} was trained on",
                    }
                )
        generated.append(activity)
    generated.append(
        {
            "@type": "prov:Activity",
            "name": "datagate enforce",
            "description": f"kept {counts['kept']} of {counts['images']} images with policy "
            f"{policy.get('name') or policy.get('source')} (sha256:{policy.get('digest')})",
            "prov:wasAssociatedWith": {
                "@type": "prov:SoftwareAgent",
                "name": f"datagate {__version__}",
            },
        }
    )
    interval = (
        f"{_pct(share.get('low'))} to {_pct(share.get('high'))}"
        if share.get("low") is not None
        else "no interval"
    )
    measured = (
        f"Human share of the kept set: {_pct(share.get('share'))} ({interval}), measured by "
        f"{share.get('measured_by')}: {share.get('method')}. Origin counts from provenance "
        f"evidence (C2PA, generator metadata, EXIF/XMP, sidecars): "
        f"{origin.get('human', 0)} human, {origin.get('synthetic', 0)} synthetic, "
        f"{origin.get('unknown', 0)} unknown."
    )
    synthetic = origin.get("synthetic", 0)
    return {
        "@context": CONTEXT,
        "@type": "sc:Dataset",
        "conformsTo": [CONFORMS_TO, RAI_CONFORMS_TO],
        "name": name or (out.resolve().name or "datagate-kept"),
        "description": f"The images kept by a datagate gate run ({counts['kept']} of "
        f"{counts['images']}); the manifest lists each image's shard, member and measures.",
        "url": kept_path.resolve().as_uri(),
        "version": "1.0.0",
        "datePublished": report["scan"].get("created_at"),
        "distribution": [
            {
                "@type": "cr:FileObject",
                "@id": "kept-manifest",
                "name": "kept-manifest",
                "description": "The kept manifest: one row per kept image.",
                "contentUrl": KEPT,
                "encodingFormat": "application/x-parquet",
                "sha256": file_sha256(kept_path),
            }
        ],
        "recordSet": [
            {
                "@type": "cr:RecordSet",
                "@id": "kept",
                "name": "kept",
                "description": "One record per kept image (the kept manifest's columns).",
                "key": {"@id": "kept/key"},
                "field": fields,
            }
        ],
        "prov:wasDerivedFrom": derived,
        "prov:wasGeneratedBy": generated,
        "rai:dataCollection": measured,
        "rai:dataCollectionType": ["Others"],
        "rai:dataPreprocessingProtocol": (
            f"Filtered by datagate policy {policy.get('name') or policy.get('source')} "
            f"(sha256:{policy.get('digest')}): {counts['rejected']} of {counts['images']} "
            "images rejected; rejected.parquet names each rule and reason."
        ),
        "rai:machineAnnotationTools": [
            t
            for t in (
                f"datagate {__version__}",
                (report["scan"].get("embedder") or {}).get("id"),
                report["synthetic"].get("head"),
            )
            if t
        ],
        "rai:dataLimitations": (
            f"{origin.get('unknown', 0)} kept images have no evidence of their origin; "
            f"{synthetic} are synthetic"
            + (
                f" (generators recorded in the ledger: {', '.join(sorted(models))})"
                if models
                else ""
            )
            + ". A detector estimate is statistical: read the interval, not the point."
        ),
        "datagate:humanShare": share,
        "datagate:generations": kept_comp.get("generation", {}),
    }
