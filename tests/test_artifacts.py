import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from eagle_cli import artifacts
from eagle_cli.errors import ArtifactError
from eagle_cli.lineage import Lineage


def _publish(root, params, *, force=False, content=b"data"):
    draft = artifacts.start("threshold", root=root, run="r", category="c", params=params, inputs=[], force=force)
    if isinstance(draft, artifacts.ArtifactRef):
        return draft
    with draft:
        draft.file("x.bin").write_bytes(content)
        draft.file("threshold.json").write_text("{}")  # what every threshold artifact holds
        draft.lineage = {"backbone": "b"}
        return draft.publish()


def test_same_params_reuse_the_artifact_and_changed_params_make_a_new_one(tmp_path):
    first = _publish(tmp_path, {"a": 1})
    again = _publish(tmp_path, {"a": 1})
    other = _publish(tmp_path, {"a": 2})
    assert again.reused and again.path == first.path
    assert not first.reused and other.path != first.path


def test_force_replaces_in_place(tmp_path):
    first = _publish(tmp_path, {"a": 1})
    second = _publish(tmp_path, {"a": 1}, force=True, content=b"new")
    assert second.path == first.path and not second.reused
    assert (second.path / "x.bin").read_bytes() == b"new"
    assert not [p for p in second.path.parent.iterdir() if p.name.startswith(".tmp-")]


def test_manifest_records_hashes_params_and_lineage(tmp_path):
    ref = _publish(tmp_path, {"a": 1})
    manifest = json.loads((ref.path / "manifest.json").read_text())
    assert manifest["kind"] == "threshold" and manifest["params"] == {"a": 1}
    assert manifest["files"]["x.bin"] == artifacts.sha256_file(ref.path / "x.bin")
    assert manifest["lineage"] == {"backbone": "b"} and manifest["id"] == ref.path.name


def test_edited_file_is_refused_and_rebuilt_on_rerun(tmp_path):
    ref = _publish(tmp_path, {"a": 1})
    (ref.path / "x.bin").write_bytes(b"tampered")
    with pytest.raises(ArtifactError, match="changed after it was written"):
        artifacts.open_artifact(ref.path)
    rebuilt = _publish(tmp_path, {"a": 1})
    assert not rebuilt.reused and (rebuilt.path / "x.bin").read_bytes() == b"data"


def test_newer_schema_is_refused_naming_both_versions(tmp_path):
    ref = _publish(tmp_path, {"a": 1})
    manifest = json.loads((ref.path / "manifest.json").read_text())
    manifest["schema"] = 99
    (ref.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=rf"schema 99.*schema {artifacts.SCHEMAS['threshold']}"):
        artifacts.open_artifact(ref.path)


def test_wrong_kind_is_refused(tmp_path):
    ref = _publish(tmp_path, {"a": 1})
    with pytest.raises(ArtifactError, match="'threshold' artifact, but a 'bank'"):
        artifacts.open_artifact(ref.path, "bank")


def test_interrupted_write_leaves_nothing_a_reader_accepts(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        draft = artifacts.start("threshold", root=tmp_path, run="r", category="c", params={}, inputs=[])
        with draft:
            draft.file("x.bin").write_bytes(b"half")
            raise KeyboardInterrupt
    assert artifacts.list_artifacts(tmp_path) == []
    assert not any(p.name.startswith(".tmp-") for p in (tmp_path / "r" / "c" / "threshold").iterdir())
    with pytest.raises(ArtifactError, match="No threshold artifact"):
        artifacts.latest(tmp_path, "r", "c", "threshold")


def test_directory_without_manifest_is_not_an_artifact(tmp_path):
    (tmp_path / "half").mkdir()
    with pytest.raises(ArtifactError, match="interrupted write"):
        artifacts.open_artifact(tmp_path / "half")


def test_lineage_mismatch_names_the_differences():
    a = Lineage("a", ("l",), "none", 256, 224, 0, 0.0, 8, (0, 0), (1.0,))
    with pytest.raises(ArtifactError, match="backbone: 'a' vs 'b'; crop: 224 vs 200"):
        a.check_matches(replace(a, backbone="b", crop=200), what="These")
    a.check_matches(Lineage.from_dict(a.as_dict()), what="The same, round-tripped")


def test_resolve_by_id_prefix_and_latest(tmp_path):
    first = _publish(tmp_path, {"a": 1})
    second = _publish(tmp_path, {"a": 2})
    assert artifacts.resolve(first.id[:6], root=tmp_path, run="r", category="c", kind="threshold").path == first.path
    assert artifacts.resolve(None, root=tmp_path, run="r", category="c", kind="threshold").path == second.path
    assert artifacts.latest(tmp_path, "r", "c", "threshold", where={"a": 1}).path == first.path


def test_a_file_edited_after_it_was_verified_is_still_caught(tmp_path):
    ref = _publish(tmp_path, {"a": 1})
    artifacts.open_artifact(ref.path)  # verified once, remembered for this process
    (ref.path / "x.bin").write_bytes(b"DATA")  # same size, new content
    with pytest.raises(ArtifactError, match="changed after it was written"):
        artifacts.open_artifact(ref.path)


def test_a_reader_always_finds_an_artifact_while_it_is_republished_with_force(tmp_path):
    import threading

    ref = _publish(tmp_path, {"a": 1})
    stop, misses, reads = threading.Event(), [], [0]

    def read():
        while not stop.is_set():
            try:
                artifacts.open_artifact(ref.path, verify=False)
                reads[0] += 1
            except ArtifactError as exc:
                misses.append(str(exc))

    reader = threading.Thread(target=read)
    reader.start()
    for number in range(300):
        _publish(tmp_path, {"a": 1}, force=True, content=str(number).encode())
    stop.set()
    reader.join()
    assert reads[0] > 0 and misses == []
    assert (ref.path / "x.bin").read_bytes() == b"299"
    assert [p.name for p in ref.path.parent.iterdir()] == [ref.id]


def test_a_second_writer_of_the_same_id_waits_and_then_reuses_the_first_ones_artifact(tmp_path):
    import threading

    draft = artifacts.start("threshold", root=tmp_path, run="r", category="c", params={"a": 1}, inputs=[])
    second: list = []
    waiter = threading.Thread(target=lambda: second.append(_publish(tmp_path, {"a": 1}, content=b"second")))
    waiter.start()
    waiter.join(timeout=0.5)
    assert waiter.is_alive()  # blocked on the first draft's lock
    with draft:
        draft.file("x.bin").write_bytes(b"first")
        draft.file("threshold.json").write_text("{}")
        first = draft.publish()
    waiter.join(timeout=10)
    assert second[0].reused and second[0].path == first.path
    assert (first.path / "x.bin").read_bytes() == b"first"
    assert [p.name for p in first.path.parent.iterdir()] == [first.id]


def test_every_published_file_has_the_same_permissions(tmp_path):
    import os

    from safetensors.numpy import save_file

    draft = artifacts.start("threshold", root=tmp_path, run="r", category="c", params={}, inputs=[])
    with draft:
        save_file({"x": __import__("numpy").zeros(3)}, str(draft.file("x.safetensors")))
        draft.file("y.json").write_text("{}")
        ref = draft.publish()
    modes = {p.name: p.stat().st_mode & 0o777 for p in ref.path.iterdir()}
    umask = os.umask(0)
    os.umask(umask)
    assert set(modes.values()) == {0o666 & ~umask}, modes


def test_a_failed_resumable_draft_keeps_its_folder_only_if_it_holds_work(tmp_path):
    for content, kept in ((b"", False), (b'{"id": "0"}\n', True)):
        with pytest.raises(RuntimeError):
            draft = artifacts.start("answers", root=tmp_path, run="r", category=str(kept), params={}, inputs=[],
                                    resumable=True)
            with draft:
                draft.file("answers.jsonl").write_bytes(content)
                raise RuntimeError("the model failed to load")
        assert draft.tmp.exists() is kept


def test_an_edited_manifest_is_refused(tmp_path):
    ref = _publish(tmp_path, {"knn_k": 1})
    manifest_path = ref.path / "manifest.json"
    original = json.loads(manifest_path.read_text())
    edits = {"params": lambda m: m["params"].update(knn_k=3), "id": lambda m: m.update(id="0" * 16),
             "files": lambda m: m["files"].pop("threshold.json"), "schema": lambda m: m.update(schema="2")}
    for name, edit in edits.items():
        manifest = json.loads(json.dumps(original))
        edit(manifest)
        manifest_path.write_text(json.dumps(manifest))
        with pytest.raises(ArtifactError, match="edited|whole number"):
            artifacts.open_artifact(ref.path)
        assert not _publish(tmp_path, {"knn_k": 1}).reused, name  # and the next run rebuilds it
        manifest_path.write_text(json.dumps(original))


def test_a_copied_store_reads_its_own_inputs_and_refuses_a_damaged_one(tmp_path):
    import shutil

    first = _publish(tmp_path / "a", {"a": 1})
    draft = artifacts.start("scores", root=tmp_path / "a", run="r", category="c", params={}, inputs=[first])
    with draft:
        draft.file("scores.jsonl").write_text("")
        draft.file("metrics.json").write_text("{}")
        second = draft.publish()
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    copied = artifacts.open_artifact(tmp_path / "b" / second.path.relative_to(tmp_path / "a"))
    assert copied.input("threshold").path == tmp_path / "b" / first.path.relative_to(tmp_path / "a")
    (copied.input("threshold").path / "x.bin").write_bytes(b"damaged")
    with pytest.raises(ArtifactError, match="changed after it was written"):
        copied.input("threshold")
    assert second.input("threshold").path == first.path  # the original is untouched
    shutil.rmtree(tmp_path / "a")
    shutil.move(tmp_path / "b", tmp_path / "moved")
    moved = artifacts.open_artifact(tmp_path / "moved" / second.path.relative_to(tmp_path / "a"))
    with pytest.raises(ArtifactError, match="changed after it was written"):
        moved.input("threshold")  # found in the moved store, damage and all


def test_killed_runs_leftovers_are_cleaned_by_the_next_writer_but_no_live_or_resumable_draft(tmp_path):
    folder = tmp_path / "r" / "c" / "threshold"
    own, dead = (artifacts.artifact_id("threshold", {"a": a}, []) for a in (1, 2))
    leftovers = [folder / f".tmp-{own}-deadbeef", folder / f".tmp-{dead}-0badcafe", folder / ".tmp-old-12345678"]
    kept = folder / f".tmp-partial-{dead}"
    for path in (*leftovers, kept):
        path.mkdir(parents=True)
        (path / "x.bin").write_bytes(b"work")
    # Another process is writing a third id right now: its draft must survive.
    writer = subprocess.Popen([sys.executable, "-c", (
        "import sys; from pathlib import Path; from eagle_cli import artifacts\n"
        f"draft = artifacts.start('threshold', root=Path({str(tmp_path)!r}), run='r', category='c', "
        "params={'a': 3}, inputs=[])\n"
        "print(draft.tmp, flush=True); sys.stdin.readline()")], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True)
    try:
        live = Path(writer.stdout.readline().strip())
        assert live.is_dir()
        _publish(tmp_path, {"a": 1})
        assert not any(path.exists() for path in leftovers)
        assert live.is_dir() and kept.is_dir()
    finally:
        writer.communicate("\n", timeout=60)
    # The writer ended without publishing or releasing, as a killed one does: the next writer cleans up after it.
    _publish(tmp_path, {"a": 4})
    assert not live.exists() and kept.is_dir()
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".tmp-")) == [kept.name]


def test_inputs_are_recorded_relative_to_the_store(tmp_path):
    first = _publish(tmp_path, {"a": 1})
    draft = artifacts.start("scores", root=tmp_path, run="r", category="c", params={}, inputs=[first])
    with draft:
        draft.file("scores.jsonl").write_text("")
        draft.file("metrics.json").write_text("{}")
        second = draft.publish()
    assert second.manifest["inputs"][0]["path"] == f"r/c/threshold/{first.id}"
    assert second.input("threshold").path == first.path
