"""Regenerate the tiny edge-case and hostile files in tests/data (run from the repo root).

.venv/bin/python tests/data/make_data.py
"""

from __future__ import annotations

import io
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

HERE = Path(__file__).parent


def gradient(w: int, h: int) -> Image.Image:
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None]
    arr = np.stack([x + 0 * y, y + 0 * x, (x + y) / 2], axis=-1)
    return Image.fromarray(arr.astype(np.uint8))


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def main() -> None:
    base = gradient(96, 64)
    buf = io.BytesIO()
    base.save(buf, "JPEG", quality=90)
    jpeg = buf.getvalue()

    (HERE / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (HERE / "empty.jpg").write_bytes(b"")
    (HERE / "text-named.jpg").write_bytes(b"hello, I am plain text pretending to be a JPEG\n")

    # A PNG whose header declares 24000x24000 pixels but carries almost no data.
    ihdr = struct.pack(">IIBBBBB", 24000, 24000, 8, 2, 0, 0, 0)
    bomb = (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )
    (HERE / "bomb-24000x24000.png").write_bytes(bomb)

    # EXIF orientation 6: stored 96x64, displayed 64x96.
    exif = Image.Exif()
    exif[0x0112] = 6
    base.save(HERE / "exif-rotated.jpg", "JPEG", quality=90, exif=exif.tobytes())
    base.convert("CMYK").save(HERE / "cmyk.jpg", "JPEG", quality=90)
    arr16 = (np.linspace(0, 65535, 96 * 64).reshape(64, 96)).astype(np.uint16)
    Image.fromarray(arr16).save(HERE / "gray16.png")
    pal = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.info["transparency"] = 0
    pal.save(HERE / "palette-transparent.png", transparency=0)
    base.convert("L").save(HERE / "grey.png")
    frames = [gradient(48, 32), gradient(48, 32).transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    frames[0].save(HERE / "animated.gif", save_all=True, append_images=frames[1:], duration=100)

    with tarfile.open(HERE / "hostile.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in (("ok/000001.jpg", jpeg), ("../escape.jpg", jpeg), ("/abs.jpg", jpeg)):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("ok/000002.jpg")
        link.type, link.linkname, link.mtime = tarfile.SYMTYPE, "/etc/passwd", 1_700_000_000
        tar.addfile(link)

    pq.write_table(
        pa.table({"caption": ["a cat", "a dog"], "label": [1, 2]}),
        HERE / "no-image-column.parquet",
    )


if __name__ == "__main__":
    main()
