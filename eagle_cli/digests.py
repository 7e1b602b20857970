"""The content hash every file is known by (artifact files, weights, templates, domain knowledge, images)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


#: The images' content-hash cache, kept in the artifacts folder: path → [size, mtime_ns, inode, sha256].
IMAGE_DIGESTS = ".image-digests.json"


def content_digests(paths: list[Path], cache_dir: Path | None = None) -> list[str | None]:
    """The sha256 of each file (None where it cannot be read), hashing only the files whose size, modification
    time or inode changed since the cache in ``cache_dir`` last saw them: a file touched but not changed keeps
    its digest, and a rerun over an unchanged dataset reads no image."""
    cache = _read_cache(cache_dir)
    digests, changed = [], False
    for path in paths:
        key = str(path.absolute())
        try:
            stat = path.stat()
            stamp = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
            if cache.get(key, [])[:3] != stamp:
                cache[key] = [*stamp, sha256_file(path)]
                changed = True
            digests.append(cache[key][3])
        except OSError:
            digests.append(None)  # a broken link or an unreadable file: decoding names it
    if changed and cache_dir is not None:
        _write_cache(cache_dir, cache)
    return digests


def _read_cache(cache_dir: Path | None) -> dict[str, list]:
    if cache_dir is None:
        return {}
    try:
        cache = json.loads((cache_dir / IMAGE_DIGESTS).read_text())
    except (OSError, ValueError):
        return {}  # none yet, or damaged: it is only a cache
    return cache if isinstance(cache, dict) else {}


def _write_cache(cache_dir: Path, cache: dict[str, list]) -> None:
    """Replace the cache in one rename; a read-only or full store goes without it."""
    temporary = None
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=cache_dir, prefix=".tmp-digests-")
        with os.fdopen(handle, "w") as fh:
            json.dump(cache, fh, separators=(",", ":"))
        os.replace(temporary, cache_dir / IMAGE_DIGESTS)
    except OSError:
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
