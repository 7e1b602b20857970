"""The export folder's contract, shared by the writer and the runtime: file names, the manifest and its checks.

``manifest.json`` names every file with its sha256 and the threshold it came from, and is sealed by the sha256 of
its own content; a folder whose files or manifest do not match (edited, damaged, missing) or that another export
schema wrote is refused with one message.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from eagle_cli import __version__
from eagle_cli.digests import sha256_file
from eagle_cli.errors import ArtifactError

#: Bumped whenever a file's layout or meaning changes; a runtime reads only its own schema.
SCHEMA = 1
FORMAT = "eagle-export"
MANIFEST = "manifest.json"
#: The feature graph's files, by format: ONNX's one file; OpenVINO's model and weights.
GRAPHS = {"onnx": ("features.onnx",), "openvino": ("features.xml", "features.bin")}
BANK = "bank.safetensors"
EXPERT = "expert.json"


def write_manifest(folder: Path, *, threshold: dict, lineage: dict, runtime: str) -> None:
    """Seal ``folder``: every file in it with its sha256, and where it came from."""
    files = {path.name: sha256_file(path) for path in sorted(folder.iterdir()) if path.name != MANIFEST}
    manifest = {"format": FORMAT, "schema": SCHEMA, "eagle": __version__, "runtime": runtime,
                "threshold": threshold, "lineage": lineage, "files": files}
    (folder / MANIFEST).write_text(json.dumps({**manifest, "seal": _seal(manifest)}, indent=2) + "\n")


def _seal(manifest: dict) -> str:
    """The sha256 of the manifest's content without its seal: an edited manifest is caught like an edited file."""
    content = {key: value for key, value in manifest.items() if key != "seal"}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def read_manifest(folder: Path) -> dict:
    """The manifest of an export folder whose every file is present and unchanged; else one clear error."""
    folder = Path(folder)
    redo = f"export it again with `eagle export --threshold ID --out {folder}`"
    path = folder / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"{folder} is not an eagle export: it has no {MANIFEST}; {redo}.")
    try:
        manifest = json.loads(path.read_text())
        kind, schema, files = manifest["format"], manifest["schema"], manifest["files"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path} cannot be read ({exc.__class__.__name__}: {exc}); {redo}.") from None
    if kind != FORMAT:
        raise ArtifactError(f"{path} is a {kind!r} manifest, not an eagle export; {redo}.")
    if schema != SCHEMA:
        raise ArtifactError(f"{folder} was exported by eagle {manifest.get('eagle', '?')} with export schema {schema}; "
                            f"this eagle ({__version__}) reads schema {SCHEMA}: {redo}.")
    if manifest.get("seal") != _seal(manifest):
        raise ArtifactError(f"{path} was edited after export (its seal does not match its content); {redo}.")
    for name, digest in files.items():
        file = folder / name
        if not file.is_file():
            raise ArtifactError(f"{folder} lacks {name}, which its manifest lists; {redo}.")
        if sha256_file(file) != digest:
            raise ArtifactError(f"{file} does not match the check value in {MANIFEST}: it was changed or damaged "
                                f"after export; {redo}.")
    runtime = manifest.get("runtime")
    if runtime not in GRAPHS:
        raise ArtifactError(f"{path} names the runtime {runtime!r}, which this eagle does not know; {redo}.")
    for name in (*GRAPHS[runtime], BANK, EXPERT):
        if name not in files:
            raise ArtifactError(f"{path} does not list {name}; {redo}.")
    return manifest
