"""eagle reason: ask a multimodal LLM every prompt; record each answer as it comes, resumably.

Answers are appended to ``answers.jsonl`` and flushed one by one inside the artifact's hidden
partial directory; a rerun after an interruption skips what is already answered, and the artifact
is published when every prompt has an answer or a recorded error. Unparseable replies are kept
and marked invalid, never dropped. Reference (eagle-method.md E.2) lost up to 9 trailing answers.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from eagle_cli import artifacts
from eagle_cli.artifacts import ArtifactRef
from eagle_cli.data.images import load_rgb
from eagle_cli.errors import EagleError, ImageError, ParameterError
from eagle_cli.mllm.openai_api import OpenAIBackend, ServerSettings
from eagle_cli.mllm.prompt import Prompt
from eagle_cli.mllm.settings import CaasSettings
from eagle_cli.prompts.questions import parse_answer
from eagle_cli.context import Context
from eagle_cli.stages.common import ERRORS_FILE, read_jsonl, write_jsonl
from eagle_cli.stages.prompt import PROMPTS_FILE

ANSWERS_FILE = "answers.jsonl"


BACKENDS = ("hf", "openai")


@dataclass(frozen=True)
class ReasonParams:
    model: str
    backend: str = "hf"
    dtype: str = "auto"
    device: str = "auto"
    max_new_tokens: int = 128
    batch_size: int = 1
    trust_remote_code: bool = False
    caas: CaasSettings | None = None
    server: ServerSettings = ServerSettings()

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ParameterError(f"--backend must be hf or openai, got {self.backend!r}.")
        if self.caas is not None and self.backend != "hf":
            raise ParameterError("--caas edits attention inside the model, so it needs --backend hf; "
                                 "a server only returns text.")
        if self.batch_size < 1 or self.max_new_tokens < 1 or self.server.concurrency < 1:
            raise ParameterError("--batch-size, --max-new-tokens and --concurrency must be at least 1.")

    @property
    def prompts_per_call(self) -> int:
        """Prompts handed to the backend at once: a server gets enough to keep --concurrency requests in flight."""
        return self.batch_size if self.backend == "hf" else max(self.batch_size, self.server.concurrency)

    def identity(self) -> dict:
        # Batching, device, address and concurrency change speed, not the greedy answers.
        return {"backend": self.backend, "model": self.model, "dtype": self.dtype,
                "max_new_tokens": self.max_new_tokens, "caas": asdict(self.caas) if self.caas else None}


def load_backend(params: ReasonParams):
    """The backend for ``params``: a model loaded in this process, or a client of a server."""
    if params.backend == "openai":
        return OpenAIBackend(params.model, params.server, max_new_tokens=params.max_new_tokens)
    from eagle_cli.mllm.hf import HFBackend  # transformers loads only when a model is asked for

    return HFBackend(params.model, dtype=params.dtype, device=params.device,
                     trust_remote_code=params.trust_remote_code, max_new_tokens=params.max_new_tokens)


class SharedBackend:
    """Loads the backend the first time a stage has a question to ask, once for every category.

    A load that failed is not retried for the next category; its message is raised again.
    """

    def __init__(self, params: ReasonParams):
        self.params = params
        self._backend = None
        self._error: str | None = None

    def __call__(self):
        if self._error is not None:
            raise EagleError(self._error)
        if self._backend is None:
            try:
                self._backend = load_backend(self.params)
            except EagleError as exc:
                self._error = str(exc)
                raise
        return self._backend


def read_answers(path: Path) -> list[dict]:
    """Answer lines already written; a line cut off by a kill is dropped (it will be asked again)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def _prompt(record: dict, prompts_dir: Path) -> Prompt:
    items = []
    for item in record["message"]:
        if item["type"] == "text":
            items.append(item)
            continue
        path = Path(item["path"])
        path = path if path.is_absolute() else prompts_dir / path
        if not path.is_file():
            raise ImageError(path, "vanished since `eagle prompt` wrote this prompt; restore it or rerun eagle prompt")
        items.append({"type": "image", "image": load_rgb(path), "role": item["role"]})
    return Prompt(items, uncertain=bool(record["uncertain"]))


def run_reason(prompts_ref: ArtifactRef, params: ReasonParams, *, context: Context, backend=None) -> ArtifactRef:
    """Answer every prompt of a ``prompts`` artifact into an ``answers`` artifact (resuming a partial one).

    ``backend`` is a zero-argument callable returning the backend (default: :class:`SharedBackend`);
    it is called only if some prompt still needs an answer, so a finished run loads no model.
    """
    category = prompts_ref.path.parent.parent.name
    draft = artifacts.start("answers", root=context.artifacts, run=context.run, category=category,
                            params=params.identity(), inputs=[prompts_ref], force=context.force, resumable=True)
    if isinstance(draft, ArtifactRef):
        return draft
    backend = backend or SharedBackend(params)
    with draft:
        records = read_jsonl(prompts_ref.path / PROMPTS_FILE)
        done = read_answers(draft.file(ANSWERS_FILE))
        errors = read_answers(draft.file(ERRORS_FILE))
        finished = {row["id"] for row in done} | {row["id"] for row in errors}
        todo = [r for r in records if r["id"] not in finished]
        model = backend() if todo else None
        # Rewrite the kept lines so a half-written last line from a kill is gone before appending.
        write_jsonl(draft.file(ANSWERS_FILE), done)
        with open(draft.file(ANSWERS_FILE), "a") as answers, open(draft.file(ERRORS_FILE), "a") as error_log, \
                context.reporter.task(f"reason {category}", len(records)) as advance:
            advance(len(records) - len(todo))
            for start in range(0, len(todo), params.prompts_per_call):
                batch, prompts = [], []
                for record in todo[start:start + params.prompts_per_call]:
                    try:
                        prompts.append(_prompt(record, prompts_ref.path))
                        batch.append(record)
                    except ImageError as exc:
                        if context.on_error == "fail":
                            raise
                        _append(error_log, {"id": record["id"], "path": record["path"], "file": exc.path,
                                            "error": exc.reason})
                        advance(1)
                for record, reply in zip(batch, model.generate(prompts, params.caas) if prompts else []):
                    parsed = parse_answer(reply.text, record["options"])
                    _append(answers, {
                        "id": record["id"], "prompts": prompts_ref.id, "path": record["path"], "label": record["label"],
                        "type": record["type"], "question": record["question"], "options": record["options"],
                        "correct": record["answer"], "raw": reply.text, "parsed": parsed, "valid": parsed is not None,
                        "expert_anomalous": record["anomalous"], "uncertain": record["uncertain"],
                        "caas": reply.caas, "latency_s": reply.seconds, "backend": params.backend, "model": model.name,
                        "revision": model.revision,
                    })
                    advance(1)
        rows = read_answers(draft.file(ANSWERS_FILE))
        draft.lineage = prompts_ref.lineage
        draft.summary = {"answers": len(rows), "errors": len(read_answers(draft.file(ERRORS_FILE))),
                         "invalid": sum(not r["valid"] for r in rows), "caas": sum(r["caas"] for r in rows),
                         "model": params.model}
        return draft.publish()


def _append(fh, row: dict) -> None:
    fh.write(json.dumps(row) + "\n")
    fh.flush()

