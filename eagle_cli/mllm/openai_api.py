"""A model behind an OpenAI-compatible chat-completions server (vLLM, transformers serve, …).

Images travel as base64 PNG data URLs. Requests run on a bounded thread pool; 429 and 5xx
answers and dropped connections are retried with exponential backoff; a server that stays away
stops the run with a message (answers so far are kept, and a rerun resumes).
"""

from __future__ import annotations

import base64
import io
import json
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from eagle_cli.errors import EagleError
from eagle_cli.mllm.prompt import Prompt, Reply
from eagle_cli.params import ServerSettings

RETRY_STATUS = {429, 500, 502, 503, 504}


def _data_url(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _content(prompt: Prompt) -> list[dict]:
    return [{"type": "image_url", "image_url": {"url": _data_url(item["image"])}} if item["type"] == "image"
            else {"type": "text", "text": item["text"]} for item in prompt.items]


class OpenAIBackend:
    """Greedy answers from a served model; ``generate`` keeps input order."""

    def __init__(self, model: str, settings: ServerSettings, *, max_new_tokens: int = 128):
        self.name = model
        self.revision = None
        self.settings = settings
        self.max_new_tokens = max_new_tokens
        self.url = settings.base_url.rstrip("/") + "/chat/completions"
        self._key = os.environ.get(settings.api_key_env, "")

    def _post(self, body: bytes) -> bytes:
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        last = ""
        for attempt in range(self.settings.retries + 1):
            if attempt:
                time.sleep(self.settings.backoff_s * 2 ** (attempt - 1))
            request = urllib.request.Request(self.url, data=body, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=self.settings.timeout_s) as response:
                    return response.read()
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}: {exc.read()[:200]!r}"
                if exc.code not in RETRY_STATUS:
                    break
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                last = str(getattr(exc, "reason", exc))
        raise EagleError(
            f"The server at {self.url} did not answer ({last}) after {self.settings.retries + 1} tries. "
            "Answers so far are kept; start the server (or fix --base-url) and rerun to resume."
        )

    def _ask(self, prompt: Prompt) -> Reply:
        body = json.dumps({"model": self.name, "messages": [{"role": "user", "content": _content(prompt)}],
                           "max_tokens": self.max_new_tokens, "temperature": 0}).encode()
        start = time.perf_counter()
        raw = self._post(body)
        seconds = time.perf_counter() - start
        try:
            text = json.loads(raw)["choices"][0]["message"]["content"] or ""
        except (json.JSONDecodeError, KeyError, IndexError, TypeError):
            # Kept verbatim so the answer is recorded (and counted invalid), never dropped.
            text = raw.decode("utf-8", "replace")
        return Reply(text, seconds, False)

    def generate(self, prompts: list[Prompt], caas_settings=None) -> list[Reply]:
        if caas_settings is not None:
            raise EagleError("CAAS edits attention inside the model; it needs --backend hf, not a server.")
        with ThreadPoolExecutor(max_workers=self.settings.concurrency) as pool:
            return list(pool.map(self._ask, prompts))
