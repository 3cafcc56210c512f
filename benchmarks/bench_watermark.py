"""Invisible-watermark detection: false positives on real photographs, survival of re-encoding.

    .venv/bin/python benchmarks/bench_watermark.py [--evaldata ../shared/evaldata]

False positives: every real photograph available offline (the `real` images of
evaldata/detect, the camera photographs of evaldata/neardup, and the photographs bundled
with scikit-image and scikit-learn) is checked for the SD v1 and SDXL messages.
Survival: the SDXL message is embedded into each of them (as SDXL's pipeline does), the
result is saved as PNG and as JPEG at several qualities (and downscaled by half), and each
copy is checked again. Also reports the decode time per image.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import time
from pathlib import Path

from PIL import Image

from datagate.provenance.watermark import MIN_SIDE, detect, embed_sdxl


def real_photographs(evaldata: Path) -> list[tuple[str, Image.Image]]:
    photos: list[tuple[str, Image.Image]] = []
    with open(evaldata / "detect" / "labels.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            if row["label"] == "real":
                photos.append(
                    (row["path"], Image.open(evaldata / "detect" / row["path"]).convert("RGB"))
                )
    for path in sorted((evaldata / "neardup" / "imagededup").glob("*base_images*.jpg")):
        photos.append((path.name, Image.open(path).convert("RGB")))
    import skimage.data
    from sklearn.datasets import load_sample_images

    for name in (
        "astronaut",
        "coffee",
        "chelsea",
        "rocket",
        "hubble_deep_field",
        "immunohistochemistry",
        "retina",
    ):
        photos.append(
            (f"skimage:{name}", Image.fromarray(getattr(skimage.data, name)()).convert("RGB"))
        )
    for path, array in zip(load_sample_images().filenames, load_sample_images().images):
        photos.append((f"sklearn:{Path(path).name}", Image.fromarray(array)))
    return [(n, im) for n, im in photos if min(im.size) >= MIN_SIDE]


def reencode(im: Image.Image, fmt: str, quality: int = 95) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, fmt, quality=quality) if fmt == "JPEG" else im.save(buf, fmt)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--evaldata", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "evaldata"
    )
    args = parser.parse_args()
    photos = real_photographs(args.evaldata)
    t0 = time.perf_counter()
    false_pos = [n for n, im in photos if detect(im).found]
    per_image_ms = (time.perf_counter() - t0) / len(photos) * 1e3
    variants = {
        "PNG (lossless)": lambda im: reencode(im, "PNG"),
        "JPEG q95": lambda im: reencode(im, "JPEG", 95),
        "JPEG q90": lambda im: reencode(im, "JPEG", 90),
        "JPEG q75": lambda im: reencode(im, "JPEG", 75),
        "JPEG q50": lambda im: reencode(im, "JPEG", 50),
        "downscaled 50% (PNG)": lambda im: im.resize((im.width // 2, im.height // 2)),
    }
    survival: dict[str, float] = {}
    marked = [embed_sdxl(im) for _, im in photos]
    for name, transform in variants.items():
        hits = sum(detect(transform(im)).found == "sdxl" for im in marked)
        survival[name] = hits / len(marked)
    result = {
        "real_photographs": len(photos),
        "false_positives": len(false_pos),
        "false_positive_files": false_pos,
        "decode_ms_per_image": round(per_image_ms, 1),
        "sdxl_detection_rate_after": survival,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
