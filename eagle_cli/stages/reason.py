"""eagle reason: ask a multimodal LLM every prompt; record each answer as it comes, resumably.

Answers are appended to ``answers.jsonl`` and flushed one by one inside the artifact's hidden
partial directory; a rerun after an interruption skips what is already answered, and the artifact
is published when every prompt has an answer or a recorded error. Unparseable replies are kept
and marked invalid, never dropped. Reference (eagle-method.md E.2) lost up to 9 trailing answers.
"""

from __future__ import annotations

from pathlib import Path

from eagle_cli import artifacts
from eagle_cli.artifacts import ArtifactRef
from eagle_cli.context import Context
from eagle_cli.data.images import decode
from eagle_cli.errors import EagleError, ImageError
from eagle_cli.formats.answers import ANSWERS_FILE, AnswerRow, read_partial_answers
from eagle_cli.formats.jsonl import ERRORS_FILE, ErrorRow, append_row, write_rows
from eagle_cli.formats.prompts import PromptRecord, read_prompts, resolve_image
from eagle_cli.mllm.backends import SharedBackend
from eagle_cli.mllm.prompt import Interrupted, Prompt
from eagle_cli.params import ReasonParams
from eagle_cli.prompts.questions import parse_answer
from eagle_cli.settings import identity


def _prompt(record: PromptRecord, prompts_ref: ArtifactRef) -> Prompt:
    items = []
    for item in record.message:
        if item["type"] == "text":
            items.append(item)
            continue
        path = resolve_image(prompts_ref, item)
        if not path.is_file():
            raise ImageError(path, "vanished since `eagle prompt` wrote this prompt; restore it or rerun eagle prompt")
        items.append({"type": "image", "image": decode(Path(path)), "role": item["role"]})
    return Prompt(items, uncertain=record.uncertain)


def _warnings(rows: list[AnswerRow], invalid: int, params: ReasonParams) -> list[str]:
    """What a user should know about answers that were written but may not mean what they seem."""
    warnings = []
    if rows and invalid == len(rows):
        warnings.append(f"none of the {len(rows)} answers names an option: the model may not follow the answer "
                        "format (raise --max-new-tokens, or check the model and the template)")
    if params.caas is not None and not any(r.uncertain for r in rows):
        warnings.append("--caas was on but no image fell in the CAAS window (τ < score < S_max), so it changed "
                        "nothing; the threshold's window is empty (see fit-threshold)")
    return warnings


def run_reason(prompts_ref: ArtifactRef, params: ReasonParams, *, context: Context, backend=None) -> ArtifactRef:
    """Answer every prompt of a ``prompts`` artifact into an ``answers`` artifact (resuming a partial one).

    ``backend`` is a zero-argument callable returning the backend (default: :class:`SharedBackend`);
    it is called only if some prompt still needs an answer, so a finished run loads no model.
    """
    category = prompts_ref.category
    backend = backend or SharedBackend(params)

    def build(draft):
        records = read_prompts(prompts_ref)
        done, errors = read_partial_answers(draft.tmp)
        finished = {row.id for row in done} | {row.id for row in errors}
        todo = [r for r in records if r.id not in finished]
        model = backend() if todo else None
        # Rewrite the kept lines so a half-written last line from a kill is gone before appending.
        write_rows(draft.file(ANSWERS_FILE), done)
        with open(draft.file(ANSWERS_FILE), "a") as answers, open(draft.file(ERRORS_FILE), "a") as error_log, \
                context.reporter.task(f"reason {category}", len(records)) as advance:
            advance(len(records) - len(todo))
            for start in range(0, len(todo), params.prompts_per_call):
                batch, prompts = [], []
                for record in todo[start:start + params.prompts_per_call]:
                    try:
                        prompts.append(_prompt(record, prompts_ref))
                        batch.append(record)
                    except ImageError as exc:
                        if context.on_error == "fail":
                            raise
                        append_row(error_log, ErrorRow(record.path, exc.reason, file=exc.path, id=record.id))
                        advance(1)
                try:
                    replies = model.generate(prompts, params.caas) if prompts else []
                    stop = None
                except Interrupted as exc:
                    replies, stop = exc.replies, exc
                for record, reply in zip(batch, replies, strict=True):
                    if reply is None:
                        continue
                    if reply.error is not None:
                        append_row(error_log, ErrorRow(record.path, reply.error, id=record.id))
                        advance(1)
                        continue
                    parsed = parse_answer(reply.text, record.options)
                    append_row(answers, AnswerRow(
                        record.id, prompts_ref.id, record.path, record.label, record.type, record.question,
                        record.options, record.answer, reply.text, parsed, parsed is not None, record.anomalous,
                        record.uncertain, reply.caas, reply.seconds, params.backend, model.name, model.revision))
                    advance(1)
                if stop is not None:
                    raise EagleError(str(stop))  # after keeping every answer that arrived
        rows, errors = read_partial_answers(draft.tmp)
        draft.lineage = prompts_ref.lineage
        invalid = sum(not r.valid for r in rows)
        draft.summary = {"answers": len(rows), "errors": len(errors), "invalid": invalid,
                         "caas": sum(r.caas for r in rows), "model": params.model,
                         "warnings": _warnings(rows, invalid, params)}

    return artifacts.produce("answers", context=context, category=category, params=identity(params),
                             inputs=[prompts_ref], build=build, resumable=True)
