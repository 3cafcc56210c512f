"""Provenance: origin evidence inside the file (and its sidecar), reduced to one verdict,
and the rights holder's training permission.

See :mod:`datagate.provenance.evidence` for what is read and the precedence that decides
(the stored verdict weighs unsigned human claims as weak; a policy may decide again from
the evidence), and :mod:`datagate.provenance.rights` for the training permission.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import pyarrow as pa

from datagate.provenance import evidence as prov
from datagate.provenance import rights as rights_
from datagate.provenance import watermark as wm
from datagate.provenance import xmp as xmp_
from datagate.scanner.signals.base import Sample


class Provenance:
    name: ClassVar[str] = "provenance"
    version: ClassVar[int] = 3
    fields: ClassVar[tuple[pa.Field, ...]] = (
        pa.field("origin", pa.string()),  # human | synthetic | unknown
        pa.field("origin_strength", pa.string()),  # definitive | strong | weak
        pa.field("generator", pa.string()),
        pa.field("provenance_conflict", pa.bool_()),
        pa.field("evidence", pa.string()),  # JSON list of {source, says, strength, detail, ...}
        pa.field("c2pa_state", pa.string()),  # absent | valid | invalid | remote | error
        pa.field("c2pa_tampered", pa.bool_()),  # integrity checks fail (changed after signing)
        pa.field("c2pa_trusted", pa.bool_()),
        pa.field("c2pa_codes", pa.list_(pa.string())),
        pa.field("c2pa_claim_generator", pa.string()),
        pa.field("c2pa_source_type", pa.string()),
        pa.field("c2pa_ingredient_source_types", pa.list_(pa.string())),
        pa.field("watermark", pa.string()),  # sdxl | sd-v1 | None
        pa.field("watermark_ber", pa.float32()),
        pa.field("watermark_checked", pa.bool_()),
        pa.field("provenance_errors", pa.string()),
        pa.field("generation", pa.int32()),  # 0 human; n+1 from a model trained on gen n
        pa.field("generation_source", pa.string()),
        pa.field("rights_training", pa.string()),  # allowed | notAllowed | constrained | None
        pa.field("rights_source", pa.string()),  # where the most restrictive one was read
    )

    def compute(self, sample: Sample) -> dict[str, Any]:
        d = sample.decoded
        info = d.info if d is not None else {}
        evidence: list[prov.Evidence] = []
        c2pa = prov.C2paResult("absent", [])
        text = prov.xmp_text(info)
        packet = xmp_.parse(text) if text else None
        if sample.data is not None:
            c2pa = prov.read_c2pa(sample.data, d.format if d else None, packet)
            evidence += prov.c2pa_evidence(c2pa)
        if d is not None:
            evidence += prov.metadata_evidence(d.info, d.exif, d.alpha_lsb)
        evidence += prov.sidecar_evidence(sample.record.meta)
        rights = rights_.combine(
            [
                c2pa.rights,
                rights_.from_xmp(packet) if packet is not None else rights_.Rights(),
                rights_.from_sidecar(sample.record.meta),
            ]
        )
        mark = None
        if (
            sample.data is not None
            and d is not None
            and wm.selected(sample.data, sample.watermark_rate)
        ):
            mark = _watermark(sample.data)
            if mark.found:
                label = {"sdxl": "SDXL", "sd-v1": "Stable Diffusion 1.x/2.x"}[mark.found]
                evidence.append(
                    prov.Evidence(
                        "watermark",
                        "synthetic",
                        "strong",
                        f"{label} dwtDct watermark (bit-error rate {mark.ber:.2f})",
                        label,
                    )
                )
            elif mark.error:
                evidence.append(prov.Evidence("watermark", None, "weak", mark.error, error=True))
        verdict = prov.decide(evidence)
        errors = [e.detail for e in evidence if e.error]
        gen, gen_source = prov.generation(sample.record.meta, info, verdict)
        return {
            "origin": verdict.origin,
            "origin_strength": verdict.strength,
            "generator": verdict.generator,
            "provenance_conflict": verdict.conflict,
            "evidence": verdict.evidence_json(),
            "c2pa_state": c2pa.state,
            "c2pa_tampered": c2pa.tampered,
            "c2pa_trusted": c2pa.trusted,
            "c2pa_codes": c2pa.codes or None,
            "c2pa_claim_generator": c2pa.claim_generator,
            "c2pa_source_type": c2pa.source_type,
            "c2pa_ingredient_source_types": c2pa.ingredient_source_types or None,
            "watermark": mark.found if mark else None,
            "watermark_ber": mark.ber if mark else None,
            "watermark_checked": mark is not None and mark.ber is not None,
            "provenance_errors": json.dumps(errors) if errors else None,
            "generation": gen,
            "generation_source": gen_source,
            "rights_training": rights.training,
            "rights_source": rights.source,
        }


def _watermark(data: bytes) -> wm.WatermarkResult:
    """Decode the full-resolution image (the analysis image is too small) and look."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return wm.detect(im)
    except Exception as exc:
        return wm.WatermarkResult(None, None, f"watermark check could not decode: {exc}")
