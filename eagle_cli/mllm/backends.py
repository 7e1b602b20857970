"""The one backend factory: a model in this process or a client of servers, for the stage and the service alike."""

from __future__ import annotations

from eagle_cli.errors import EagleError
from eagle_cli.params import ReasonParams


def load_backend(params: ReasonParams):
    """The backend for ``params``: a model loaded in this process, or a client of a server."""
    if params.backend == "openai":
        from eagle_cli.mllm.openai_api import OpenAIBackend

        return OpenAIBackend(params.model, params.server, max_new_tokens=params.max_new_tokens)
    from eagle_cli.mllm.hf import HFBackend  # transformers loads only when a model is asked for

    return HFBackend.load(params.model, dtype=params.model_dtype, device=params.device,
                          trust_remote_code=params.trust_remote_code, max_new_tokens=params.max_new_tokens,
                          caas_settings=params.caas, image_pixels=(params.min_pixels, params.max_pixels))


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
