"""A model behind an OpenAI-compatible chat-completions server (vLLM, transformers serve, …).

Requests go through the ``openai`` client, which keeps the protocol: timeouts, and retries with
backoff on 429, 5xx, timeouts and dropped connections (``--retries``). Images travel as base64 PNG
data URLs; prompts run on a bounded thread pool (``--concurrency``). A server that stays away
stops the run with a message (answers so far are kept, and a rerun resumes).

Several servers (``base_url`` a comma-separated list, e.g. vLLM replicas) are eagle's own: each
request goes to the live server with the fewest requests in flight; a server that refuses or drops
connections (after the client's retries) is taken out for the rest of the run and its questions go
to the others. Every prompt still gets exactly one reply, so the answers artifact holds each
question once.
"""

from __future__ import annotations

import base64
import io
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import openai

from eagle_cli.errors import EagleError
from eagle_cli.mllm.prompt import Interrupted, Prompt, Reply
from eagle_cli.params import ServerSettings

#: Refusals of one request (malformed, too large, unprocessable): that prompt is listed, the others go on.
#: Every other 4xx (wrong key, model, address or method) concerns the whole run: asking again cannot help.
PROMPT_STATUS = {400, 413, 422}
#: Statuses the client retried before giving up: the server is there but did not answer in time.
BUSY_STATUS = {408, 409, 429}


class _Refused(Exception):
    """The server refused this one request (too large, malformed): recorded, and the others go on."""


def _data_url(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _content(prompt: Prompt) -> list[dict]:
    return [{"type": "image_url", "image_url": {"url": _data_url(item["image"])}} if item["type"] == "image"
            else {"type": "text", "text": item["text"]} for item in prompt.items]


@dataclass
class _Server:
    url: str
    client: openai.OpenAI
    in_flight: int = 0
    down: str | None = None  # why it was taken out


class _Servers:
    """The servers of one run: least-outstanding choice among the live ones, thread-safe."""

    def __init__(self, settings: ServerSettings):
        key = os.environ.get(settings.api_key_env) or "none"  # the client insists on a key; a local server has none
        self.all = [_Server(url, openai.OpenAI(base_url=url, api_key=key, timeout=settings.timeout_s,
                                               max_retries=settings.retries)) for url in settings.base_urls]
        self._lock = threading.Lock()

    def acquire(self) -> _Server | None:
        with self._lock:
            live = [server for server in self.all if server.down is None]
            if not live:
                return None
            server = min(live, key=lambda item: item.in_flight)
            server.in_flight += 1
            return server

    def release(self, server: _Server) -> None:
        with self._lock:
            server.in_flight -= 1

    def take_out(self, server: _Server, reason: str) -> None:
        with self._lock:
            if server.down is None and len(self.all) > 1:
                print(f"warning: {server.url} stopped answering ({reason}); its questions go to the other servers",
                      file=sys.stderr)
            server.down = server.down or reason


class OpenAIBackend:
    """Greedy answers from one or several served copies of a model; ``generate`` keeps input order."""

    def __init__(self, model: str, settings: ServerSettings, *, max_new_tokens: int = 128):
        self.name = model
        self.revision = None
        self.settings = settings
        self.max_new_tokens = max_new_tokens
        self.servers = _Servers(settings)

    def _post(self, messages: list[dict]) -> str:
        """The reply's body: from the least busy live server, another one if it is gone."""
        last = ""
        while (server := self.servers.acquire()) is not None:
            try:
                response = server.client.chat.completions.with_raw_response.create(
                    model=self.name, messages=messages, max_tokens=self.max_new_tokens, temperature=0)
                return response.text
            except openai.APIStatusError as exc:
                last = f"HTTP {exc.status_code} from {server.url}: {exc.response.text[:200]!r}"
                if exc.status_code in PROMPT_STATUS:
                    raise _Refused(last) from None
                if exc.status_code < 500 and exc.status_code not in BUSY_STATUS:
                    raise EagleError(f"The server refused the request ({last}); it is not retried. Fix the model "
                                     "name, API key or address and rerun: answers so far are kept.") from None
                break
            except openai.APITimeoutError:
                last = f"no answer from {server.url} within {self.settings.timeout_s} s"
                break
            except openai.APIConnectionError as exc:
                # Refused or dropped after the client's retries: the server is gone. Ask another one.
                last = f"{server.url}: {exc.__cause__ or exc}"
                self.servers.take_out(server, last)
            finally:
                self.servers.release(server)
        count, tries = len(self.servers.all), self.settings.retries + 1
        what = (f"none of the {count} servers answers ({last})" if count > 1 and all(s.down for s in self.servers.all)
                else f"the server did not answer ({last}) after {tries} {'try' if tries == 1 else 'tries'}")
        raise EagleError(f"Stopped: {what}. Answers so far are kept; start the server(s) (or fix --base-url) and "
                         "rerun to resume.")

    def _ask(self, prompt: Prompt) -> Reply:
        start = time.perf_counter()
        raw = self._post([{"role": "user", "content": _content(prompt)}])
        seconds = time.perf_counter() - start
        try:
            text = json.loads(raw)["choices"][0]["message"]["content"] or ""
        except (json.JSONDecodeError, KeyError, IndexError, TypeError):
            # Kept verbatim so the answer is recorded (and counted invalid), never dropped.
            text = raw
        return Reply(text, seconds, False)

    def generate(self, prompts: list[Prompt], caas_settings=None) -> list[Reply]:
        """Replies in input order; a prompt the server refuses gets a reply with ``error``; if the servers
        stop answering, :class:`Interrupted` carries the replies that did arrive."""
        if caas_settings is not None:
            raise EagleError("CAAS edits attention inside the model; it needs --backend hf, not a server.")
        replies: list[Reply | None] = []
        stop: EagleError | None = None
        with ThreadPoolExecutor(max_workers=self.settings.concurrency) as pool:
            for future in [pool.submit(self._ask, prompt) for prompt in prompts]:
                try:
                    replies.append(future.result())
                except _Refused as exc:
                    replies.append(Reply("", 0.0, False, error=f"the server refused this prompt ({exc})"))
                except EagleError as exc:
                    stop = stop or exc
                    replies.append(None)
        if stop is not None:
            raise Interrupted(stop, replies)
        return replies
