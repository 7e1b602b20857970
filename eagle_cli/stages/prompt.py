"""eagle prompt: expert verdicts, box or heatmap images and text become ordered multimodal messages.

The message is assembled as the service assembles it (``prompts/assemble.py``); this stage draws the
box and heatmap images into the artifact, picks the reference images and asks each question.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from eagle_cli import artifacts
from eagle_cli.artifacts import ArtifactRef
from eagle_cli.context import Context
from eagle_cli.data.images import decode
from eagle_cli.errors import ImageError, ParameterError
from eagle_cli.formats.features import features_info, read_images
from eagle_cli.formats.jsonl import ERRORS_FILE, ErrorRow, write_rows
from eagle_cli.formats.prompts import IMAGES_DIR, PromptRecord, image_dir, prompts_params, write_prompts
from eagle_cli.formats.scores import ScoreRow, read_maps, read_scores, source_of
from eagle_cli.formats.threshold import read_threshold
from eagle_cli.params import PromptParams
from eagle_cli.prompts.assemble import Verdict, Visuals, assemble
from eagle_cli.prompts.boxes import find_boxes
from eagle_cli.prompts.questions import default_question
from eagle_cli.prompts.render import draw_boxes, heatmap_overlay
from eagle_cli.prompts.templates import Templates
from eagle_cli.seeds import category_seed


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


def run_prompt(scores_ref: ArtifactRef, params: PromptParams, *, context: Context) -> ArtifactRef:
    """Write one prompt record per scored image (and question) into a ``prompts`` artifact."""
    templates = Templates.load(params.template)
    threshold_ref = scores_ref.input("threshold")
    train = threshold_ref.input("bank").input("features")
    category = features_info(train).category
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
        normal_paths = [record.path for record in read_images(train)]
        rows = read_scores(scores_ref)
        image_dir(draft)  # where the box and heatmap images go
        records: list[PromptRecord] = []
        errors: list[ErrorRow] = []
        with context.reporter.task(f"prompt {category}", len(rows)) as advance:
            for row in rows:
                verdict = Verdict(category, row.anomalous, row.score, threshold.tau, threshold.s_max)
                try:
                    entry = index.entry_for(Path(row.path)) if index is not None else None
                    shots = _shots(row, params, category, normal_paths, index, entry)
                    boxes, heatmap = _visuals(row, scores_ref, params, threshold.tau, draft.tmp)
                    message = assemble(templates, params, verdict, query=row.path, key="path", knowledge=knowledge,
                                       shots=shots, boxes=(boxes[0], len(boxes[1])) if boxes[1] else None,
                                       heatmap=heatmap)
                except ImageError as exc:
                    if context.on_error == "fail":
                        raise
                    errors.append(ErrorRow(row.path, exc.reason, file=exc.path))
                    advance(1)
                    continue
                questions = index.questions(entry, params.task) if entry is not None else [default_question(row.label)]
                records += [PromptRecord(f"{row.index}:{number}", row.path, row.label, row.anomalous, row.uncertain,
                                         boxes[1], question.text, question.options, question.answer, question.type,
                                         message.asking(templates, question))
                            for number, question in enumerate(questions)]
                advance(1)
        write_prompts(draft, records)
        write_rows(draft.file(ERRORS_FILE), errors)
        draft.lineage = scores_ref.lineage
        draft.summary = {"prompts": len(records), "errors": len(errors),
                         "anomalous": sum(r.anomalous for r in records),
                         "caas_window": sum(r.uncertain for r in records),
                         "with_boxes": sum(bool(r.boxes) for r in records),
                         "domain_knowledge": knowledge is not None, "template": templates.origin}

    return artifacts.produce("prompts", context=context, category=category, params=prompts_params(params),
                             inputs=[scores_ref], build=build)


def _shots(row: ScoreRow, params: PromptParams, category: str, normal_paths: list[str], index, entry) -> list[str]:
    """The normal reference images shown with ``row``: seeded from the training set, or MMAD's lists."""
    if not params.shots:
        return []
    if params.template_source == "seeded" or entry is None:
        rng = np.random.default_rng([category_seed(params.seed, category), row.index])
        picks = rng.choice(len(normal_paths), size=min(params.shots, len(normal_paths)), replace=False)
        return [normal_paths[i] for i in sorted(picks)]
    return [str(path) for path in index.templates(entry, params.template_source, params.shots)]


def _visuals(row: ScoreRow, scores_ref: ArtifactRef, params: PromptParams, tau: float, out_dir: Path
             ) -> tuple[tuple[str, list[list[int]]], str | None]:
    """((the box image's path, the boxes), the heatmap's path) drawn for ``row``; no boxes and None when not shown."""
    shown = Visuals.of(params, row.anomalous)
    boxes: list[list[int]] = []
    box_path, heatmap_path = f"{IMAGES_DIR}/{row.index:06d}_boxes.png", None
    if shown.boxes or shown.heatmap:
        image = decode(Path(row.path))
        _, amap = read_maps(scores_ref, row)
        if shown.boxes:
            boxes = [box for box, _ in find_boxes(amap, tau, params.box)]
            if boxes:
                draw_boxes(image, boxes).save(out_dir / box_path)
        if shown.heatmap:
            heatmap_path = f"{IMAGES_DIR}/{row.index:06d}_heatmap.png"
            heatmap_overlay(image, amap, vmax=tau, seen=tuple(row.observed_box)).save(out_dir / heatmap_path)
    return (box_path, boxes), heatmap_path
