"""Readers: find shards under the given paths and turn each into image records.

Registry of shard kinds, chosen from what a path holds:

* a directory is walked recursively; each directory's loose image files form one
  ``folder`` shard, each ``.tar``/``.tar.gz``/``.tgz`` file one ``webdataset`` shard, each
  ``.parquet`` file one ``parquet`` shard. Everything not read is listed as skipped with its
  reason: other files, hidden files and folders, folders datagate itself wrote (a scan or
  enforce output), and symbolic links to folders (never followed). A symbolic link to a
  file is read only when it resolves inside the input; one pointing outside becomes an
  error row (an image name) or a skipped entry;
* a file is read as the shard its suffix names; an image file is a shard of its own whose
  key is its name.

A Parquet file found inside a folder that cannot be read becomes an error row; one named
on the command line is a usage error.

An input may also be an fsspec URL (``s3://bucket/prefix``, ``gs://...``, ``hf://...``):
:mod:`.remote` lists it and the same readers read it through its filesystem.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from datagate.contract import IMAGES_FILE, META_FILE, PARTS_DIR, REPORT_JSON
from datagate.errors import InputError
from datagate.scanner.defaults import DEFAULT_MAX_BYTES
from datagate.scanner.readers.base import IMAGE_SUFFIXES, Shard, is_image_name, shard_path
from datagate.scanner.readers.folder import FolderShard, outside_reason, read_file
from datagate.scanner.readers.parquet import ParquetShard
from datagate.scanner.readers.remote import (
    RemoteFile,
    as_url,
    describe,
    filesystem,
    join_url,
    relative,
    url_of,
)
from datagate.scanner.readers.webdataset import WebDatasetShard, is_tar_name

__all__ = [
    "IMAGE_SUFFIXES",
    "Discovery",
    "FolderShard",
    "ParquetShard",
    "Shard",
    "WebDatasetShard",
    "as_url",
    "discover",
    "input_ids",
    "read_file",
    "reopen",
    "shard_path",
]

#: A meta.json or report.json larger than this is not opened to check who wrote it.
_MAX_MARKER_BYTES = 64 * 1024 * 1024


def reopen(
    kind: str, shard_id: str, path: Path, members: list[str], image_column: str | None = None
) -> Shard:
    """A shard recorded in a scan's meta.json, opened again to read some of its members."""
    url = as_url(path)
    if url is not None:
        return _reopen_remote(kind, shard_id, url, members, image_column)
    if kind == "folder":
        return FolderShard(shard_id, path, sorted(members))
    if kind == "webdataset":
        return WebDatasetShard(shard_id, path)
    if kind == "parquet":
        return ParquetShard(shard_id, path, image_column)
    raise InputError(f"{path}: unknown shard kind {kind!r}")


def _reopen_remote(
    kind: str, shard_id: str, url: str, members: list[str], image_column: str | None
) -> Shard:
    fs, path = filesystem(url)
    if kind == "folder":
        remote = {}
        for name in sorted(members):
            try:
                size = int(fs.size(f"{path}/{name}") or 0)
            except (OSError, ValueError):
                size = 0  # read (and reported) as an error row
            remote[name] = RemoteFile(f"{path}/{name}", size, "")
        return FolderShard(shard_id, Path(path), sorted(members), url=url, remote=remote)
    listing = describe(fs, path, url)
    if not isinstance(listing, RemoteFile):
        raise InputError(f"{url}: expected a {kind} file, found a prefix")
    if kind == "webdataset":
        return WebDatasetShard(shard_id, Path(path), url=url, remote=listing)
    if kind == "parquet":
        return ParquetShard(shard_id, Path(path), image_column, url=url, remote=listing)
    raise InputError(f"{url}: unknown shard kind {kind!r}")


@dataclass
class Discovery:
    shards: list[Shard] = field(default_factory=list)
    #: (path, reason) of every file found but not read.
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _posix(rel: Path) -> str:
    text = rel.as_posix()
    return "." if text in ("", ".") else text


def input_ids(paths: list[Path]) -> list[str]:
    """A distinct, deterministic name for each input: its shortest distinguishing path suffix.

    ``a/train`` and ``b/train`` become ``a/train`` and ``b/train``; ``x/train`` and
    ``y/val`` become ``train`` and ``val``. Paths are made absolute without following links.
    """
    parts = [Path(os.path.abspath(p)).parts[1:] or ("root",) for p in paths]

    def suffix(i: int, k: int) -> str:
        return "/".join(parts[i][-k:])

    ids: list[str] = []
    for i, own in enumerate(parts):
        others = [j for j in range(len(parts)) if j != i]
        for k in range(1, len(own) + 1):
            if all(suffix(j, k) != suffix(i, k) for j in others):
                ids.append(suffix(i, k))
                break
        else:
            twin = next(paths[j] for j in others if suffix(j, len(own)) == suffix(i, len(own)))
            raise InputError(
                f"{paths[i]} and {twin} are the same input given twice",
                hint="give each input once",
            )
    return ids


def datagate_output(directory: Path) -> str | None:
    """Why ``directory`` is a folder datagate wrote (a scan or enforce output), or None.

    Recognised by datagate's own files, not by the folder's name: a ``meta.json`` beside
    ``images.parquet`` or ``parts/`` that names a datagate version, or a ``report.json``
    that does.
    """
    meta = directory / META_FILE
    scan_files = (directory / IMAGES_FILE).is_file() or (directory / PARTS_DIR).is_dir()
    if meta.is_file() and scan_files and _names_datagate(meta, "schema_version"):
        return "a datagate scan folder (datagate's own output, not read)"
    report = directory / REPORT_JSON
    if report.is_file() and _names_datagate(report, "report_version"):
        return "a datagate enforce output folder (datagate's own output, not read)"
    return None


def _names_datagate(path: Path, version_key: str) -> bool:
    try:
        if path.stat().st_size > _MAX_MARKER_BYTES:
            return False
        obj = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(obj, dict) and "datagate_version" in obj and version_key in obj


def discover(
    paths: Sequence[Path | str],
    *,
    image_column: str | None = None,
    exclude: list[Path] | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Discovery:
    """Find every shard under ``paths`` in a deterministic order.

    Shard ids are relative to the given path (prefixed with the input's shortest
    distinguishing path suffix when several paths are given), so a dataset moved elsewhere
    keeps its keys.
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

    urls = [as_url(p) for p in paths]
    for given, url in zip(paths, urls, strict=True):
        if url is None and not Path(given).exists():
            raise InputError(f"{given}: no such file or directory")
    # a URL is named like a path whose first part is its scheme (s3://b/k -> /s3/b/k)
    named = [
        Path(p) if u is None else Path("/" + u.replace("://", "/", 1)) for p, u in zip(paths, urls)
    ]
    names = input_ids(named) if len(paths) > 1 else [root.name for root in named]
    for given, url, name in zip(paths, urls, names, strict=True):
        if url is not None:
            _walk_remote(
                url,
                name,
                "" if len(paths) == 1 else f"{name}/",
                image_column,
                max_bytes,
                found,
                add,
            )
            continue
        root = Path(given)
        if root.is_file():
            shard = _file_shard(root, name, image_column, max_bytes, strict=True)
            if shard is None:
                if not is_image_name(root.name):
                    raise InputError(
                        f"{root}: not an image folder, WebDataset tar shard or Parquet file",
                        hint="supported: directories, .tar/.tar.gz/.tgz, .parquet, image files",
                    )
                shard = FolderShard(name, root.parent, [root.name], max_bytes, single=True)
            add(shard, root)
            continue
        prefix = "" if len(paths) == 1 else f"{name}/"
        _walk(root, prefix, excluded, image_column, max_bytes, found, add)
    found.shards.sort(key=lambda s: s.id)
    return found


def _walk(
    root: Path,
    prefix: str,
    excluded: list[Path],
    image_column: str | None,
    max_bytes: int,
    found: Discovery,
    add: Callable[[Shard, Path], None],
) -> None:
    real_root = root.resolve()
    own = datagate_output(root)
    if own is not None:
        found.skipped.append((str(root), own))
        return
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        kept_dirs = []
        for d in sorted(dirnames):
            sub = here / d
            if sub.resolve() in excluded and not sub.is_symlink():
                continue
            reason = None
            if d.startswith("."):
                reason = "hidden folder"
            elif sub.is_symlink():
                reason = (
                    "symbolic link to a folder inside the input (not followed: its target is "
                    "read where it lies)"
                )
                if outside_reason(sub, real_root) is not None:
                    reason = "symbolic link to a folder outside the input (not followed)"
            else:
                reason = datagate_output(sub)
            if reason is None:
                kept_dirs.append(d)
            else:
                found.skipped.append((str(sub), reason))
        dirnames[:] = kept_dirs
        rel_dir = _posix(here.relative_to(root))
        images: list[str] = []
        for name in sorted(filenames):
            path = here / name
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if name.startswith("."):
                found.skipped.append((str(path), "hidden file"))
                continue
            if is_image_name(name):
                images.append(name)  # links and special files become error rows
                continue
            if path.is_symlink() and (why := outside_reason(path, real_root)) is not None:
                found.skipped.append((str(path), why))
                continue
            try:
                regular = stat.S_ISREG(path.stat().st_mode)
            except OSError:
                regular = False
            shard = (
                _file_shard(path, prefix + rel, image_column, max_bytes, strict=False)
                if regular
                else None
            )
            if shard is not None:
                add(shard, path)
            elif regular:
                found.skipped.append((str(path), "not an image, tar shard or Parquet file"))
            else:
                found.skipped.append((str(path), "not a regular file"))
        if images:
            add(FolderShard(prefix + rel_dir, here, images, max_bytes, root=real_root), here)


def _walk_remote(
    url: str,
    name: str,
    prefix: str,
    image_column: str | None,
    max_bytes: int,
    found: Discovery,
    add: Callable[[Shard, Path], None],
) -> None:
    """:func:`_walk` for an fsspec URL: one listing, grouped as a local walk groups files."""
    fs, root = filesystem(url)
    listing = describe(fs, root, url)
    origin = Path(url)
    if isinstance(listing, RemoteFile):
        shard = _file_shard(
            Path(root), name, image_column, max_bytes, strict=True, url=url, remote=listing
        )
        if shard is None:
            if not is_image_name(root):
                raise InputError(
                    f"{url}: not an image folder, WebDataset tar shard or Parquet file",
                    hint="supported: prefixes, .tar/.tar.gz/.tgz, .parquet, image files",
                )
            one = PurePosixPath(root)
            shard = FolderShard(
                name,
                Path(str(one.parent)),
                [one.name],
                max_bytes,
                single=True,
                url=url_of(fs, str(one.parent)),
                remote={one.name: listing},
            )
        add(shard, origin)
        return
    if not listing:
        raise InputError(f"{url}: no such object or prefix (nothing found under it)")
    images: dict[str, dict[str, RemoteFile]] = {}
    hidden: set[str] = set()
    for obj in listing:
        rel = relative(obj.path, root)
        *folders, base = rel.split("/")
        dot = next((i for i, part in enumerate(folders) if part.startswith(".")), None)
        if dot is not None:
            folder = join_url(url, "/".join(folders[: dot + 1]))
            if folder not in hidden:
                hidden.add(folder)
                found.skipped.append((folder, "hidden folder"))
            continue
        where = join_url(url, rel)
        if base.startswith("."):
            found.skipped.append((where, "hidden file"))
        elif is_image_name(base):
            images.setdefault("/".join(folders) or ".", {})[base] = obj
        else:
            shard = _file_shard(
                Path(obj.path),
                prefix + rel,
                image_column,
                max_bytes,
                strict=False,
                url=url_of(fs, obj.path),
                remote=obj,
            )
            if shard is None:
                found.skipped.append((where, "not an image, tar shard or Parquet file"))
            else:
                add(shard, origin)
    for rel_dir, files in images.items():
        directory = root if rel_dir == "." else f"{root.rstrip('/')}/{rel_dir}"
        shard = FolderShard(
            prefix + rel_dir,
            Path(directory),
            sorted(files),
            max_bytes,
            url=url_of(fs, directory),
            remote=files,
        )
        add(shard, origin)


def _file_shard(
    path: Path,
    shard_id: str,
    image_column: str | None,
    max_bytes: int,
    *,
    strict: bool,
    url: str | None = None,
    remote: RemoteFile | None = None,
) -> Shard | None:
    name = path.name.lower()
    if is_tar_name(name):
        return WebDatasetShard(shard_id, path, max_bytes, url=url, remote=remote)
    if name.endswith(".parquet"):
        return ParquetShard(
            shard_id, path, image_column, max_bytes, strict=strict, url=url, remote=remote
        )
    return None
