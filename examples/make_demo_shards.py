"""Build deterministic demo shards from the photographs scikit-image and scikit-learn ship.

Writes, under the output folder (default ``examples/shards``):

* ``photos/``            loose JPEG and PNG files (a folder shard), with a few broken files
                         and eight generated pictures carrying AUTOMATIC1111 or ComfyUI
                         metadata;
* ``web-00000{0,1}.tar`` WebDataset shards: ``.jpg`` plus ``.json`` sidecars (declaring
  ``"origin": "human"``) and ``.txt`` captions, and one member with an unsafe ``../`` path;
* ``hf-images.parquet``  a Parquet file with the ``{bytes, path}`` image struct that
  Hugging Face ``datasets`` writes, plus a caption column;
* ``SOURCES.txt``        where the pictures come from (listed by the scan as skipped).

With ``--reserve DIR``, also a reserve for the top-up (``datagate enforce --reserve``):
``DIR/reserve-000000.tar``, other crops of the same photographs declared human in their
sidecars, plus byte-identical copies of a few dataset images (which the top-up never adds).

The set contains exact duplicates (byte-identical copies across shards), near duplicates
(resized and re-encoded copies), degenerate images (tiny, near-black, flat) and broken files
(truncated, empty, text named .jpg), so every per-image rule of the default policy fires.
The same command always writes the same bytes.

    python examples/make_demo_shards.py [OUT_DIR] [--per-source N] [--reserve DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, PngImagePlugin

SEED = 20261121
SKIMAGE_PHOTOS = (
    "astronaut",
    "camera",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "coins",
    "moon",
    "clock",
    "grass",
    "gravel",
    "brick",
    "retina",
    "cell",
)


def source_photos() -> dict[str, Image.Image]:
    import skimage.data
    from sklearn.datasets import load_sample_images

    photos: dict[str, Image.Image] = {}
    for name in SKIMAGE_PHOTOS:
        photos[name] = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
    sample = load_sample_images()
    for path, array in zip(sample.filenames, sample.images):
        photos[Path(path).stem] = Image.fromarray(array).convert("RGB")
    return photos


def variant(photo: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A distinct picture from one photograph: a random crop, flip and colour shift."""
    w, h = photo.size
    scale = rng.uniform(0.45, 0.8)
    cw, ch = max(32, int(w * scale)), max(32, int(h * scale))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    im = photo.crop((x, y, x + cw, y + ch))
    if rng.random() < 0.5:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    side = int(rng.integers(256, 448))
    im = im.resize((side, max(64, int(side * ch / cw))), Image.Resampling.BICUBIC)
    gain = rng.uniform(0.85, 1.15, size=3)
    arr = np.clip(np.asarray(im, dtype=np.float32) * gain, 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def synthetic_art(rng: np.random.Generator) -> Image.Image:
    """A procedural picture standing in for a generator's output."""
    y, x = np.mgrid[0:320, 0:320].astype(np.float32) / 320
    f = rng.uniform(2, 9, size=3)
    phase = rng.uniform(0, 6.3, size=3)
    channels = [np.sin(f[c] * (x + y * (c + 1)) * 3.1 + phase[c]) * 0.5 + 0.5 for c in range(3)]
    return Image.fromarray((np.stack(channels, -1) * 255).astype(np.uint8))


def encode(im: Image.Image, fmt: str = "JPEG", quality: int = 90) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        im.save(buf, "JPEG", quality=quality)
    else:
        im.save(buf, fmt)
    return buf.getvalue()


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 1_700_000_000
    info.mode = 0o644
    info.uname = info.gname = "datagate"
    tar.addfile(info, io.BytesIO(data))


def build(out: Path, per_source: int) -> dict[str, int]:
    rng = np.random.default_rng(SEED)
    photos = source_photos()
    images: list[tuple[str, bytes]] = []
    for name, photo in photos.items():
        for k in range(per_source):
            images.append((f"{name}-{k:02d}", encode(variant(photo, rng))))

    # near duplicates: a smaller, re-encoded copy of every 9th image
    near = [
        (f"{key}-small", encode(Image.open(io.BytesIO(data)).reduce(2), quality=75))
        for key, data in images[::9]
    ]
    # exact duplicates: byte-identical copies of every 23rd image
    exact = [(f"{key}-copy", data) for key, data in images[5::23]]
    items = images + near + exact
    order = rng.permutation(len(items))
    items = [items[i] for i in order]

    out.mkdir(parents=True, exist_ok=True)
    thirds = len(items) // 3
    folder_items, tar_items, parquet_items = (
        items[:thirds],
        items[thirds : 2 * thirds],
        items[2 * thirds :],
    )

    photos_dir = out / "photos"
    photos_dir.mkdir(exist_ok=True)
    for i, (key, data) in enumerate(folder_items):
        if i % 7 == 3:  # some PNGs, so the folder holds more than one format
            (photos_dir / f"{key}.png").write_bytes(encode(Image.open(io.BytesIO(data)), "PNG"))
        else:
            (photos_dir / f"{key}.jpg").write_bytes(data)
    # broken and degenerate files
    good = folder_items[0][1]
    (photos_dir / "broken-truncated.jpg").write_bytes(good[: len(good) // 3])
    (photos_dir / "broken-empty.jpg").write_bytes(b"")
    (photos_dir / "broken-not-an-image.jpg").write_bytes(b"this is a text file, not a JPEG\n")
    (photos_dir / "tiny-thumbnail.jpg").write_bytes(
        encode(Image.open(io.BytesIO(good)).resize((24, 24)))
    )
    # generated pictures that carry their generator's metadata, as real tools write it
    for i in range(8):
        art = synthetic_art(rng)
        info = PngImagePlugin.PngInfo()
        if i % 2 == 0:
            info.add_text(
                "parameters",
                f"a colourful abstract painting {i}\nNegative prompt: blurry\nSteps: 25, "
                "Sampler: DPM++ 2M, CFG scale: 7, Seed: 1234, Model: demo_model_v1",
            )
        else:
            prompt = {
                "4": {
                    "class_type": "CheckpointLoaderSimple",
                    "inputs": {"ckpt_name": "demo_xl.safetensors"},
                }
            }
            info.add_text("prompt", json.dumps(prompt))
        art.save(photos_dir / f"generated-{i:02d}.png", pnginfo=info)
    dark = (np.asarray(Image.open(io.BytesIO(good)), dtype=np.float32) * 0.01).astype(np.uint8)
    (photos_dir / "underexposed.jpg").write_bytes(encode(Image.fromarray(dark)))
    (photos_dir / "flat-grey.png").write_bytes(
        encode(Image.new("RGB", (320, 240), (128, 128, 128)), "PNG")
    )

    half = len(tar_items) // 2
    for shard_index, chunk in enumerate((tar_items[:half], tar_items[half:])):
        with tarfile.open(
            out / f"web-{shard_index:06d}.tar", "w", format=tarfile.USTAR_FORMAT
        ) as tar:
            for i, (key, data) in enumerate(chunk):
                sample = f"{shard_index:02d}{i:05d}"
                add_member(tar, f"{sample}.jpg", data)
                # the producer of these shards declares their origin in the sidecar
                meta = {"source": key.rsplit("-", 1)[0], "id": key, "origin": "human"}
                add_member(tar, f"{sample}.json", json.dumps(meta, sort_keys=True).encode())
                add_member(tar, f"{sample}.txt", f"a photograph of {meta['source']}".encode())
            if shard_index == 1:
                add_member(tar, "../escape.jpg", chunk[0][1])

    table = pa.table(
        {
            "image": pa.array(
                [{"bytes": data, "path": f"{key}.jpg"} for key, data in parquet_items],
                pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
            ),
            "caption": [f"a photograph of {key.rsplit('-', 1)[0]}" for key, _ in parquet_items],
        }
    )
    pq.write_table(table, out / "hf-images.parquet")
    (out / "SOURCES.txt").write_text(
        "Derived from the sample photographs bundled with scikit-image (skimage.data) and "
        "scikit-learn (sklearn.datasets.load_sample_images).\n"
    )
    return {
        "images": len(items),
        "near_duplicates": len(near),
        "exact_duplicates": len(exact),
        "folder": len(folder_items) + 14,
        "tar": len(tar_items) + 1,
        "parquet": len(parquet_items),
    }


def build_reserve(out: Path, dataset: Path, per_source: int) -> int:
    """A WebDataset shard of human-declared photographs (new crops), plus copies of a few
    of the dataset's images."""
    rng = np.random.default_rng(SEED + 1)
    out.mkdir(parents=True, exist_ok=True)
    items = [
        (f"{name}-r{k:02d}", encode(variant(photo, rng)))
        for name, photo in source_photos().items()
        for k in range(per_source)
    ]
    copies = sorted((dataset / "photos").glob("*.jpg"))[:3]
    items += [(f"copy-{p.stem}", p.read_bytes()) for p in copies]
    with tarfile.open(out / "reserve-000000.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
        for i, (key, data) in enumerate(items):
            add_member(tar, f"{i:06d}.jpg", data)
            meta = {"source": key.rsplit("-", 1)[0], "id": key, "origin": "human"}
            add_member(tar, f"{i:06d}.json", json.dumps(meta, sort_keys=True).encode())
    return len(items)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", default="examples/shards", type=Path)
    parser.add_argument("--per-source", type=int, default=12)
    parser.add_argument("--reserve", type=Path, help="also write a reserve shard here")
    args = parser.parse_args()
    counts = build(args.out, args.per_source)
    print(f"wrote demo shards to {args.out}: {json.dumps(counts)}")
    if args.reserve is not None:
        n = build_reserve(args.reserve, args.out, 3 * args.per_source)
        print(f"wrote a reserve of {n} images to {args.reserve}")


if __name__ == "__main__":
    main()
