"""Readers: find shards under the given paths and turn each into image records.

Registry of shard kinds, chosen from what a path holds:

* a directory is walked recursively (hidden directories skipped); each directory's loose
  image files form one ``folder`` shard, each ``.tar``/``.tar.gz``/``.tgz`` file one
  ``webdataset`` shard, each ``.parquet`` file one ``parquet`` shard; every other file is
  listed as skipped;
* a file is read as the shard its suffix names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from datagate.errors import InputError
from datagate.scanner.defaults import DEFAULT_MAX_BYTES
from datagate.scanner.readers.base import IMAGE_SUFFIXES, Shard, is_image_name
from datagate.scanner.readers.folder import FolderShard, read_file
from datagate.scanner.readers.parquet import ParquetShard
from datagate.scanner.readers.webdataset import WebDatasetShard, is_tar_name

__all__ = [
    "IMAGE_SUFFIXES",
    "Discovery",
    "FolderShard",
    "ParquetShard",
    "Shard",
    "WebDatasetShard",
    "discover",
    "read_file",
    "reopen",
]


def reopen(
    kind: str, shard_id: str, path: Path, members: list[str], image_column: str | None = None
) -> Shard:
    """A shard recorded in a scan's meta.json, opened again to read some of its members."""
    if kind == "folder":
        return FolderShard(shard_id, path, sorted(members))
    if kind == "webdataset":
        return WebDatasetShard(shard_id, path)
    if kind == "parquet":
        return ParquetShard(shard_id, path, image_column)
    raise InputError(f"{path}: unknown shard kind {kind!r}")


@dataclass
class Discovery:
    shards: list[Shard] = field(default_factory=list)
    #: (path, reason) of every file found but not read.
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _posix(rel: Path) -> str:
    text = rel.as_posix()
    return "." if text in ("", ".") else text


def discover(
    paths: list[Path],
    *,
    image_column: str | None = None,
    exclude: list[Path] | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Discovery:
    """Find every shard under ``paths`` in a deterministic order.

    Shard ids are relative to the given path (prefixed with its name when several paths are
    given), so a dataset moved elsewhere keeps its keys.
    """
    if not paths:
        raise InputError("no input paths given", hint="datagate scan ./shards")
    excluded = [p.resolve() for p in (exclude or [])]
    found = Discovery()
    seen_ids: dict[str, Path] = {}

    def add(shard: Shard, origin: Path) -> None:
        if shard.id in seen_ids:
            raise InputError(
                f"two inputs map to the same shard id {shard.id!r}: {seen_ids[shard.id]} and "
                f"{origin}",
                hint="scan them separately or give paths with distinct names",
            )
        seen_ids[shard.id] = origin
        found.shards.append(shard)

    for root in paths:
        if not root.exists():
            raise InputError(f"{root}: no such file or directory")
        prefix = "" if len(paths) == 1 else f"{root.resolve().name}/"
        if root.is_file():
            shard_id = prefix + root.name
            shard = _file_shard(root, shard_id, image_column, max_bytes)
            if shard is None:
                if is_image_name(root.name):
                    add(
                        FolderShard(prefix + ".", root.parent, [root.name], max_bytes),
                        root,
                    )
                else:
                    raise InputError(
                        f"{root}: not an image folder, WebDataset tar shard or Parquet file",
                        hint="supported: directories, .tar/.tar.gz/.tgz, .parquet, image files",
                    )
            else:
                add(shard, root)
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            dirnames[:] = sorted(
                d
                for d in dirnames
                if not d.startswith(".") and (here / d).resolve() not in excluded
            )
            rel_dir = _posix(here.relative_to(root))
            images: list[str] = []
            for name in sorted(filenames):
                path = here / name
                rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                if name.startswith("."):
                    continue
                if is_image_name(name):
                    images.append(name)
                    continue
                shard = _file_shard(path, prefix + rel, image_column, max_bytes)
                if shard is not None:
                    add(shard, path)
                else:
                    found.skipped.append((str(path), "not an image, tar shard or Parquet file"))
            if images:
                add(FolderShard(prefix + rel_dir, here, images, max_bytes), here)
    found.shards.sort(key=lambda s: s.id)
    return found


def _file_shard(
    path: Path, shard_id: str, image_column: str | None, max_bytes: int
) -> Shard | None:
    name = path.name.lower()
    if is_tar_name(name):
        return WebDatasetShard(shard_id, path, max_bytes)
    if name.endswith(".parquet"):
        return ParquetShard(shard_id, path, image_column, max_bytes)
    return None
