"""Versioned on-disk artifacts: ids, atomic publish, validation on read, lookup.

An artifact is a directory ``<root>/<run>/<category>/<kind>/<id>/`` holding ``manifest.json`` and
data files. The id hashes kind, schema, parameters and input ids, so the same work maps to the same
directory and is reused, and any changed parameter maps to a new one. A directory is published by
renaming a fully written, fsynced sibling; one without a valid manifest is never accepted. One
process at a time writes an id (a lock beside the directory); a second waits, then reuses its work.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from safetensors import SafetensorError

from eagle_cli import __version__
from eagle_cli.digests import sha256_file
from eagle_cli.errors import ArtifactError
from eagle_cli.progress import Reporter, Silent

if TYPE_CHECKING:
    from eagle_cli.context import Context

KINDS = ("features", "bank", "calibration", "threshold", "scores", "prompts", "answers", "report")

#: Current schema version per kind; a reader refuses any other (what each bump changed: CHANGELOG.md).
SCHEMAS = {"features": 3, "bank": 7, "calibration": 4, "threshold": 4, "scores": 4, "prompts": 3, "answers": 3,
           "report": 3}

MANIFEST = "manifest.json"
#: What a resumable draft was started with, kept beside its finished items until it is published.
DRAFT_PARAMS = ".params.json"
_UMASK = os.umask(0o022)
os.umask(_UMASK)
_TMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class ArtifactRef:
    """A published, validated artifact."""

    path: Path
    manifest: dict[str, Any]
    reused: bool = False

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    @property
    def id(self) -> str:
        return self.manifest["id"]

    @property
    def params(self) -> dict[str, Any]:
        return self.manifest["params"]

    @property
    def lineage(self) -> dict[str, Any]:
        return self.manifest["lineage"]

    @property
    def summary(self) -> dict[str, Any]:
        return self.manifest.get("summary", {})

    @property
    def created(self) -> str:
        """When it was published (ISO 8601, UTC)."""
        return self.manifest.get("created", "")

    @property
    def category(self) -> str:
        """The category this artifact belongs to: the folder the store keeps it in."""
        return self.path.parent.parent.name

    @property
    def warnings(self) -> list[str]:
        """What a user should know before trusting this artifact's numbers."""
        warnings = list(self.summary.get("warnings", []))
        if self.summary.get("errors") and not self.reused:
            warnings.append(f"{self.summary['errors']} file(s) could not be used and were left out; each is named "
                            f"with the reason in {self.path / 'errors.jsonl'}")
        if self.lineage.get("weights") == "none":
            warnings.append("random backbone weights (--weights none): scores are not meaningful.")
        return warnings

    def input(self, kind: str) -> ArtifactRef:
        """Open this artifact's input of ``kind`` (validated, and the very artifact the manifest names)."""
        for item in self.manifest["inputs"]:
            if item["kind"] == kind:
                ref = open_artifact(self.locate(item), kind)
                if ref.id != item["id"]:
                    raise ArtifactError(f"{self.path} was made from {kind} {item['id']}, but {ref.path} is {ref.id}; "
                                        "the store was edited. Re-run the stage with --force.")
                return ref
        raise ArtifactError(f"{self.path} records no input of kind {kind!r}; it was not written by this eagle.")

    def upstream(self) -> Iterator[ArtifactRef]:
        """This artifact's first input, that one's first input, and so on (opened, not re-hashed)."""
        current = self
        while current.manifest["inputs"]:
            item = current.manifest["inputs"][0]
            current = open_artifact(current.locate(item), item["kind"], verify=False)
            yield current

    def input_ids(self, kind: str) -> list[str]:
        """The ids of this artifact's inputs of ``kind``, as its manifest records them."""
        return [item["id"] for item in self.manifest["inputs"] if item["kind"] == kind]

    def locate(self, item: dict) -> Path:
        """Where an input lives: in this artifact's own store (paths are recorded relative to it)."""
        return self.path.parents[3] / item["path"]

    def as_input(self) -> dict[str, str]:
        # Relative to the store's root (run/category/kind/id): the store can be moved, copied or archived.
        return {"kind": self.kind, "id": self.id, "path": str(Path(*self.path.parts[-4:]))}


#: Files every artifact of a kind holds, whatever its settings (a joined features artifact refers to
#: its parts' tensors instead of holding one).
REQUIRED_FILES = {"features": ("images.jsonl",), "bank": ("bank.safetensors",), "calibration": ("calibration.jsonl",),
                  "threshold": ("threshold.json",), "scores": ("scores.jsonl", "metrics.json"),
                  "prompts": ("prompts.jsonl",), "answers": ("answers.jsonl",), "report": ("report.html",)}


def artifact_id(kind: str, params: dict[str, Any], inputs: list[ArtifactRef]) -> str:
    """Hash kind, schema, parameters and input ids into a 16-hex-digit id."""
    return _hash_id(kind, SCHEMAS[kind], params, [ref.id for ref in inputs])


def _hash_id(kind: str, schema: int, params: dict[str, Any], input_ids: list[str]) -> str:
    payload = {
        "kind": kind,
        "schema": schema,
        "params": params,
        "inputs": sorted(input_ids),
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class Draft:
    """An artifact being written into a hidden sibling directory; :meth:`publish` makes it visible."""

    kind: str
    final: Path
    tmp: Path
    params: dict[str, Any]
    inputs: list[ArtifactRef]
    id: str
    lineage: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    resumable: bool = False
    lock: _Lock | None = None

    def __enter__(self) -> Draft:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # Anything that escapes (an error, Ctrl-C) leaves no directory a reader would accept;
        # a resumable draft keeps its hidden directory, if it holds any work, for the next run.
        if exc_type is not None and not (self.resumable and self._holds_work()):
            self.discard()
        self._release()

    def _holds_work(self) -> bool:
        return any(path.is_file() and path.stat().st_size and path.name != DRAFT_PARAMS
                   for path in self.tmp.rglob("*"))

    def _release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def file(self, name: str) -> Path:
        return self.tmp / name

    def publish(self) -> ArtifactRef:
        """Hash every file, write the manifest, fsync, and rename into place (replacing an old copy)."""
        (self.tmp / DRAFT_PARAMS).unlink(missing_ok=True)
        files = {}
        for path in sorted(p for p in self.tmp.rglob("*") if p.is_file()):
            # Writers that go through a private temporary file (safetensors) leave 0600 behind.
            os.chmod(path, 0o666 & ~_UMASK)
            _fsync(path)
            files[str(path.relative_to(self.tmp))] = sha256_file(path)
        manifest = {
            "kind": self.kind,
            "schema": SCHEMAS[self.kind],
            "id": self.id,
            "eagle_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(),
            "params": self.params,
            "inputs": [ref.as_input() for ref in self.inputs],
            "lineage": self.lineage,
            "files": files,
            "summary": self.summary,
        }
        # Sealed as it will be read back (JSON turns paths into text and tuples into lists).
        manifest = json.loads(json.dumps(manifest, default=str))
        manifest["seal"] = _seal(manifest)
        manifest_path = self.tmp / MANIFEST
        manifest_path.write_text(json.dumps(manifest, indent=2))
        _fsync(manifest_path)
        _fsync(self.tmp)
        if self.final.exists():
            _replace_directory(self.tmp, self.final)
        else:
            os.rename(self.tmp, self.final)
        _fsync(self.final.parent)
        self._release()
        return ArtifactRef(self.final, manifest)

    def discard(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


@functools.cache
def _renameat2() -> Callable | None:
    return getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)


def _replace_directory(new: Path, old: Path) -> None:
    """Put ``new`` where ``old`` is (--force) so that a reader always finds one complete copy.

    Linux swaps the two directories in one step (renameat2 with RENAME_EXCHANGE); elsewhere the old
    copy is moved aside first, leaving a moment in which the path does not exist.
    """
    at_cwd, exchange = -100, 2
    swap = _renameat2()
    if swap is not None and swap(at_cwd, os.fsencode(new), at_cwd, os.fsencode(old), exchange) == 0:
        shutil.rmtree(new, ignore_errors=True)  # now holds the old copy
        return
    trash = old.with_name(f"{_TMP_PREFIX}old-{uuid.uuid4().hex[:8]}")
    os.rename(old, trash)
    os.rename(new, old)
    shutil.rmtree(trash, ignore_errors=True)


class _Lock:
    """The right to write one artifact id, held by one process until it publishes or gives up.

    ``flock`` is dropped by the kernel when its holder dies, so a killed run never blocks the next.
    The holder unlinks the file as it releases, so the folder keeps no lock files; a waiter that then
    holds a lock on an unlinked file has locked nothing and tries again.
    """

    def __init__(self, path: Path, reporter: Reporter):
        self.path = path
        while True:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                with reporter.task(f"waiting: another eagle process is writing {path.parent}", total=1):
                    fcntl.flock(self.fd, fcntl.LOCK_EX)
            if self._still_linked():
                return
            os.close(self.fd)

    @classmethod
    def attempt(cls, path: Path) -> _Lock | None:
        """The lock, if no process holds it now (without waiting); None if one does."""
        lock = cls.__new__(cls)
        lock.path, lock.fd = path, os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock.fd)
            return None
        if lock._still_linked():
            return lock
        os.close(lock.fd)  # its holder released it as this process took it: treat it as held
        return None

    def _still_linked(self) -> bool:
        """Whether the locked file is still the one at ``path`` (its holder unlinks it on release)."""
        try:
            return os.stat(self.path).st_ino == os.fstat(self.fd).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self.fd)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def kind_dir(root: Path, run: str, category: str, kind: str) -> Path:
    for what, name in (("run", run), ("category", category)):
        if name in ("", ".", "..") or any(sep in name for sep in ("/", "\\")) or name.startswith(_TMP_PREFIX):
            raise ArtifactError(f"The {what} name {name!r} is not a plain folder name; artifacts stay inside "
                                f"{root}. Choose a name without path separators or '..'.")
    return Path(root) / run / category / kind


def start(
    kind: str,
    *,
    root: Path,
    run: str,
    category: str,
    params: dict[str, Any],
    inputs: list[ArtifactRef],
    force: bool = False,
    resumable: bool = False,
    reporter: Reporter | None = None,
) -> ArtifactRef | Draft:
    """Return the existing artifact for this work, or a fresh :class:`Draft` to fill and publish.

    Params must be JSON-serialisable; the id depends on params and input ids only. Set the
    draft's ``lineage`` (what later stages check for compatibility) before publishing. While
    another process holds this id's draft, wait for it (and reuse what it published).
    """
    aid = artifact_id(kind, params, inputs)
    final = kind_dir(root, run, category, kind) / aid
    if not force and (existing := _reusable(final, kind)):
        return existing  # without a lock, so a read-only store can still be reused
    final.parent.mkdir(parents=True, exist_ok=True)
    lock = _Lock(final.with_name(f"{_TMP_PREFIX}lock-{aid}"), reporter or Silent())
    try:
        if not force and (existing := _reusable(final, kind)):  # published while this process waited
            lock.release()
            return existing
        _sweep_leftovers(final.parent, aid)
        if resumable:
            # One fixed hidden directory per id: an interrupted run's finished items are kept there.
            tmp = final.with_name(f"{_TMP_PREFIX}partial-{aid}")
            if force:
                shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(exist_ok=True)
            # So that a report can say what an unfinished draft is (its settings are not in its name).
            (tmp / DRAFT_PARAMS).write_text(json.dumps(params, default=str))
        else:
            tmp = final.with_name(f"{_TMP_PREFIX}{aid}-{uuid.uuid4().hex[:8]}")
            tmp.mkdir()
    except BaseException:
        lock.release()
        raise
    return Draft(kind, final, tmp, params, list(inputs), aid, resumable=resumable, lock=lock)


def draft_params(folder: Path) -> dict[str, Any] | None:
    """The parameters a resumable draft in ``folder`` was started with; None if it does not say."""
    try:
        params = json.loads((folder / DRAFT_PARAMS).read_text())
    except (OSError, ValueError):
        return None
    return params if isinstance(params, dict) else None


def _sweep_leftovers(folder: Path, own_id: str) -> None:
    """Remove what killed runs left in ``folder``: drafts and lock files of ids no process is writing (this
    process holds ``own_id``'s lock, so any draft of it is a leftover) and old copies a republish without an
    atomic swap set aside. A resumable draft (``partial-``) is kept: it holds finished answers for the next run."""
    for path in sorted(folder.glob(f"{_TMP_PREFIX}*")):
        aid = path.name[len(_TMP_PREFIX):].partition("-")[0]
        if aid == "old":
            shutil.rmtree(path, ignore_errors=True)
        elif aid == "lock":
            if (lock := _Lock.attempt(path)) is not None:
                lock.release()  # a killed holder's file: the kernel dropped its lock, the file stayed
        elif aid == own_id:
            shutil.rmtree(path, ignore_errors=True)
        elif aid != "partial" and (lock := _Lock.attempt(folder / f"{_TMP_PREFIX}lock-{aid}")) is not None:
            shutil.rmtree(path, ignore_errors=True)  # no process is writing that id
            lock.release()


def _reusable(final: Path, kind: str) -> ArtifactRef | None:
    if not final.exists():
        return None
    try:
        return replace(open_artifact(final, kind), reused=True)
    except ArtifactError:
        return None  # an edited or broken copy is rebuilt, and replaced at publish


def produce(
    kind: str,
    *,
    context: Context,
    category: str,
    params: dict[str, Any],
    inputs: list[ArtifactRef],
    build: Callable[[Draft], None],
    resumable: bool = False,
) -> ArtifactRef:
    """The artifact for this work: the existing one (unless ``context.force``), or a new one.

    ``build(draft)`` writes the files and sets the draft's lineage and summary; then the draft is
    published. Anything ``build`` raises discards the draft (a resumable one keeps its files); a
    full disk or a read-only folder becomes an :class:`ArtifactError` naming where and what to do.
    """
    target = kind_dir(context.artifacts, context.run, category, kind)
    try:
        draft = start(kind, root=context.artifacts, run=context.run, category=category, params=params,
                      inputs=inputs, force=context.force, resumable=resumable, reporter=context.reporter)
        if isinstance(draft, ArtifactRef):
            return draft
        with draft:
            build(draft)
            return draft.publish()
    except (OSError, SafetensorError) as exc:
        raise ArtifactError(_storage_failure(exc, kind, target)) from None


def _storage_failure(exc: Exception, kind: str, target: Path) -> str:
    """One message for a failed read or write while producing an artifact: what, where, what to do."""
    code = exc.errno if isinstance(exc, OSError) else None
    if code is None:  # safetensors reports the OS error inside its text
        found = re.search(r"os error (\d+)", str(exc))
        code = int(found.group(1)) if found else None
    reason = os.strerror(code) if code else str(exc)
    filename = getattr(exc, "filename", None)
    # The folder is what the user acts on, not the lock or draft inside it.
    where = filename if filename and Path(filename).parent != target else target
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        advice = "free space there, or point --artifacts at a larger disk, and rerun"
    elif code in (errno.EROFS, errno.EACCES, errno.EPERM):
        advice = "make the folder writable, or point --artifacts at one that is, and rerun"
    else:
        advice = "check that path and rerun"
    return (f"the {kind} artifact was not written ({where}: {reason}); {advice}. Nothing was published "
            "and earlier artifacts are unchanged.")


def open_artifact(path: str | Path, kind: str | None = None, *, verify: bool = True) -> ArtifactRef:
    """Open and validate an artifact directory: manifest, kind, schema and file hashes."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise ArtifactError(
            f"{path} is not a published eagle artifact (no {MANIFEST}); it may be an interrupted write. "
            "Re-run the stage that produces it."
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{manifest_path} is not valid JSON ({exc}); re-run the stage that produces it.") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{manifest_path} is not an eagle manifest (not a JSON object); re-run the stage.")
    found = manifest.get("kind")
    if kind is not None and found != kind:
        raise ArtifactError(f"{path} is a {found!r} artifact, but a {kind!r} artifact is needed here.")
    supported = SCHEMAS.get(found)
    if supported is None:
        raise ArtifactError(f"{path} has unknown kind {found!r}.")
    schema = manifest.get("schema")
    if not isinstance(schema, int) or isinstance(schema, bool):
        raise ArtifactError(f"{manifest_path} gives schema {schema!r}, not a whole number: the manifest was edited "
                            "or damaged; re-run the stage with --force.")
    if schema != supported:
        advice = ("Upgrade eagle, or re-run the stage with this version." if schema > supported else
                  "It was written by an earlier eagle; re-run the stage with this one (CHANGELOG.md says why).")
        raise ArtifactError(f"{path} is a {found} artifact of schema {schema}; this eagle {__version__} reads schema "
                            f"{supported}. {advice}")
    if manifest.get("seal") != _seal(manifest):
        raise ArtifactError(f"{manifest_path} was edited after it was written (its summary, lineage or file list no "
                            "longer match its seal); re-run the stage with --force to rebuild it.")
    if verify:
        _check_manifest(path, manifest)
        for name, digest in manifest["files"].items():
            _verify_file(path / name, digest)
    return ArtifactRef(path, manifest)


def _seal(manifest: dict) -> str:
    """The sha256 of everything in a manifest but the seal: the id covers only what decides the work (kind,
    schema, parameters, inputs), and a report prints the summary and lineage too."""
    sealed = {key: value for key, value in manifest.items() if key != "seal"}
    return hashlib.sha256(json.dumps(sealed, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _check_manifest(path: Path, manifest: dict) -> None:
    """The manifest is covered by the id: re-derive it, and check the files the kind needs are listed."""
    try:
        derived = _hash_id(manifest["kind"], manifest["schema"], manifest["params"],
                           [item["id"] for item in manifest["inputs"]])
        files = manifest["files"]
    except (KeyError, TypeError):
        derived, files = None, {}
    if derived != manifest.get("id") or derived != path.name:
        raise ArtifactError(f"{path / MANIFEST} does not match its id (its kind, parameters or inputs were edited "
                            "after it was written); re-run the stage with --force to rebuild it.")
    needed = REQUIRED_FILES[manifest["kind"]]
    if manifest["kind"] == "features" and "parts" not in manifest["params"]:
        needed = (*needed, "features.safetensors")
    missing = [name for name in needed if name not in files]
    if missing:
        raise ArtifactError(f"{path / MANIFEST} does not list {', '.join(missing)}, which every {manifest['kind']} "
                            "artifact holds: the manifest was edited; re-run the stage with --force.")


#: Files whose hash matched in this process, keyed with their size and mtime: lineage lookups
#: reopen the same inputs many times (bank → features at every later stage), and a multi-GB
#: features file should be hashed once per process, not once per lookup.
_VERIFIED: set[tuple[str, int, int, str]] = set()


def _verify_file(file: Path, digest: str) -> None:
    try:
        stat = file.stat()
    except FileNotFoundError:
        raise ArtifactError(f"{file} is listed in the manifest but missing; re-run the stage with --force.") from None
    key = (str(file.resolve()), stat.st_size, stat.st_mtime_ns, digest)
    if key in _VERIFIED:
        return
    if sha256_file(file) != digest:
        raise ArtifactError(
            f"{file} was changed after it was written (sha256 differs from the manifest); "
            "re-run the stage with --force to rebuild it."
        )
    _VERIFIED.add(key)


def latest(root: Path, run: str, category: str, kind: str, *, where: dict | None = None) -> ArtifactRef:
    """Return the most recently created artifact of ``kind`` for a run and category, validated.

    ``where`` keeps only artifacts whose params have those values (e.g. ``{"split": "train"}``).
    """
    candidates = [
        ref for ref in list_artifacts(root, run=run, category=category, kind=kind)
        if all(ref.params.get(key) == value for key, value in (where or {}).items())
    ]
    if not candidates:
        detail = "".join(f", {key}={value}" for key, value in (where or {}).items())
        raise ArtifactError(
            f"No {kind} artifact ({category}{detail}) in run {run!r} under {root}. "
            f"Run the stage that writes it first, or pass its path."
        )
    return open_artifact(candidates[-1].path, kind)


def categories_with(root: Path, run: str, kind: str) -> list[str]:
    """Categories of a run that hold at least one artifact of ``kind``."""
    return sorted({ref.path.parent.parent.name for ref in list_artifacts(root, run=run, kind=kind)})


def list_artifacts(
    root: Path, *, run: str | None = None, category: str | None = None, kind: str | None = None
) -> list[ArtifactRef]:
    """List published artifacts under ``root`` (manifests read, files not hashed), oldest first."""
    pattern = f"{run or '*'}/{category or '*'}/{kind or '*'}/*/{MANIFEST}"
    refs = []
    for manifest_path in Path(root).glob(pattern):
        if manifest_path.parent.name.startswith(_TMP_PREFIX):
            continue
        try:
            refs.append(ArtifactRef(manifest_path.parent, json.loads(manifest_path.read_text())))
        except json.JSONDecodeError:
            continue
    return sorted(refs, key=lambda ref: ref.manifest.get("created", ""))


def resolve(
    spec: str | Path | None, *, root: Path, run: str, category: str, kind: str, where: dict | None = None
) -> ArtifactRef:
    """Open an artifact given as a path, an id under the root, or ``None``/"latest"."""
    if spec is None or str(spec) == "latest":
        return latest(root, run, category, kind, where=where)
    path = Path(spec)
    if path.exists():
        return open_artifact(path, kind)
    matches = [ref for ref in list_artifacts(root, kind=kind) if ref.id.startswith(str(spec))]
    if len(matches) == 1:
        return open_artifact(matches[0].path, kind)
    if not matches:
        raise ArtifactError(f"No {kind} artifact at path or with id {spec!r} (looked under {root}).")
    raise ArtifactError(f"Id prefix {spec!r} matches {len(matches)} {kind} artifacts; give more digits.")
