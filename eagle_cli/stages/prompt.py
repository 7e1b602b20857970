"""eagle prompt: expert verdicts, box or heatmap images and text become ordered multimodal messages.

Reference (eagle-method.md C.2): instruction, answer format, the query image with the expert's
verdict ("textual prior"), and — only when the verdict is anomalous — the query again with red
boxes; then the question. Where we differ: the wording lives in an editable template; domain
knowledge and normal reference images ("shots") really reach the prompt when asked for; boxes are
drawn in the original frame, only where the map exceeds a fraction of τ.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from eagle_cli import artifacts
from eagle_cli.artifacts import ArtifactRef, sha256_file
from eagle_cli.context import Context
from eagle_cli.data.images import load_rgb
from eagle_cli.errors import ImageError, ParameterError
from eagle_cli.formats.features import read_images
from eagle_cli.formats.jsonl import ERRORS_FILE, write_jsonl
from eagle_cli.formats.prompts import IMAGES_DIR, image_dir, write_prompts
from eagle_cli.formats.scores import read_maps, read_scores, source_of
from eagle_cli.formats.threshold import read_threshold
from eagle_cli.params import PromptParams
from eagle_cli.prompts.boxes import find_boxes
from eagle_cli.prompts.questions import default_question
from eagle_cli.prompts.render import draw_boxes, heatmap_overlay
from eagle_cli.prompts.templates import Templates
from eagle_cli.seeds import category_seed


def prompt_identity(params: PromptParams) -> dict:
    """The settings, with the domain-knowledge and template files replaced by their hashes."""
    values = asdict(params)
    for key in ("domain_knowledge", "template"):
        path = getattr(params, key)
        values[key] = sha256_file(path) if path is not None and path.is_file() else None
    return values


def load_domain_knowledge(path: Path, category: str) -> str | None:
    """All entries for ``category`` in an MMAD ``domain_knowledge.json``, one per line; None if absent."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ParameterError(f"Domain knowledge file {path} is not readable JSON ({exc}).") from None
    for dataset in data.values():
        if isinstance(dataset, dict) and category in dataset:
            entries = dataset[category]
            return "\n".join(str(v) for v in (entries.values() if isinstance(entries, dict) else [entries]))
    return None


def _text(text: str) -> dict:
    return {"type": "text", "text": text}


def _image(path: str, role: str) -> dict:
    return {"type": "image", "path": path, "role": role}


def run_prompt(scores_ref: ArtifactRef, params: PromptParams, *, context: Context) -> ArtifactRef:
    """Write one prompt record per scored image (and question) into a ``prompts`` artifact."""
    templates = Templates.load(params.template)
    threshold_ref = scores_ref.input("threshold")
    train = threshold_ref.input("bank").input("features")
    category = train.params["category"]
    source = source_of(scores_ref)
    index = source.mmad_index() if source is not None and source.layout == "mmad" else None
    if index is not None:
        index.check_task(params.task)
    if params.template_source != "seeded" and index is None:
        raise ParameterError(f"--template-source {params.template_source} reads MMAD's template lists; "
                             "these scores are not of an MMAD dataset. Use --template-source seeded.")
    knowledge = load_domain_knowledge(params.domain_knowledge, category) if params.domain_knowledge else None

    def build(draft):
        threshold = read_threshold(threshold_ref)
        normal_paths = [r["path"] for r in read_images(train)]
        rows = read_scores(scores_ref)
        image_dir(draft)  # where the box and heatmap images go
        records, errors = [], []
        with context.reporter.task(f"prompt {category}", len(rows)) as advance:
            for row in rows:
                try:
                    entry = index.entry_for(Path(row["path"])) if index is not None else None
                    records += _records(row, scores_ref, params, templates, knowledge, normal_paths, threshold["tau"],
                                        threshold["s_max"], category, draft.tmp, index, entry)
                except ImageError as exc:
                    if context.on_error == "fail":
                        raise
                    errors.append({"path": row["path"], "file": exc.path, "error": exc.reason})
                advance(1)
        write_prompts(draft, records)
        write_jsonl(draft.file(ERRORS_FILE), errors)
        draft.lineage = scores_ref.lineage
        draft.summary = {"prompts": len(records), "errors": len(errors),
                         "anomalous": sum(r["anomalous"] for r in records),
                         "caas_window": sum(r["uncertain"] for r in records),
                         "with_boxes": sum(bool(r["boxes"]) for r in records),
                         "domain_knowledge": knowledge is not None, "template": templates.origin}

    return artifacts.produce("prompts", context=context, category=category, params=prompt_identity(params),
                             inputs=[scores_ref], build=build)


def _records(row, scores_ref, params, templates, knowledge, normal_paths, tau, s_max, category, out_dir, index,
             entry) -> list[dict]:
    """The prompts of one scored image: one per question (MMAD's, or the default defect question)."""
    anomalous = row["anomalous"]
    fields = {"category": category, "verdict": "anomalous" if anomalous else "normal", "score": row["score"],
              "tau": tau, "s_max": s_max, "knowledge": knowledge or "", "shots": params.shots, "n_boxes": 0}
    message = []
    if params.instruction:
        message += [_text(templates.render(part, **fields)) for part in ("instruction", "answer_format")]
    if knowledge:
        message.append(_text(templates.render("domain_knowledge", **fields)))
    if params.shots:
        if params.template_source == "seeded" or entry is None:
            rng = np.random.default_rng([category_seed(params.seed, category), row["index"]])
            picks = rng.choice(len(normal_paths), size=min(params.shots, len(normal_paths)), replace=False)
            shots = [normal_paths[i] for i in sorted(picks)]
        else:
            shots = [str(p) for p in index.templates(entry, params.template_source, params.shots)]
        if shots:
            message.append(_text(templates.render("templates", **{**fields, "shots": len(shots)})))
            message += [_image(path, "template") for path in shots]
    message.append(_text(templates.render("query", **fields)))
    if params.verdict:
        message.append(_text(templates.render("verdict", **fields)))
    message.append(_image(row["path"], "query"))
    boxes = []
    # DBT: the visual prompt accompanies an anomalous verdict only.
    if anomalous and params.visual != "none":
        image = load_rgb(Path(row["path"]))
        _, amap = read_maps(scores_ref, row)
        if params.visual in ("boxes", "both"):
            boxes = [box for box, _ in find_boxes(amap, tau, params.box)]
            if boxes:
                name = f"{IMAGES_DIR}/{row['index']:06d}_boxes.png"
                draw_boxes(image, boxes).save(out_dir / name)
                text = templates.render("boxes", **{**fields, "n_boxes": len(boxes)})
                message += [_text(text), _image(name, "boxes")]
        if params.visual in ("heatmap", "both"):
            name = f"{IMAGES_DIR}/{row['index']:06d}_heatmap.png"
            heatmap_overlay(image, amap, vmax=tau, seen=row.get("observed_box")).save(out_dir / name)
            message += [_text(templates.render("heatmap", **fields)), _image(name, "heatmap")]
    questions = index.questions(entry, params.task) if entry is not None else [default_question(row["label"])]
    records = []
    for number, question in enumerate(questions):
        options = [{"letter": k, "text": v} for k, v in question.options.items()]
        text = templates.render("question", **fields, question=question.text, options=options)
        records.append({"id": f"{row['index']}:{number}", "path": row["path"], "label": row["label"],
                        "defect": row["defect"], "score": row["score"], "anomalous": anomalous,
                        "uncertain": row["uncertain"], "boxes": boxes, "question": question.text,
                        "options": question.options, "answer": question.answer, "type": question.type,
                        "message": [*message, _text(text)]})
    return records
