"""eagle serve: the expert of a threshold artifact as an HTTP inspection service."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from eagle_cli.cli.app import app, command, err
from eagle_cli.cli.options import (
    EXPERT,
    IN,
    MODEL,
    REASON,
    SCORE,
    SERVER,
    ArtifactsOpt,
    CategoryOpt,
    DeviceOpt,
    KnnBackendOpt,
    RunOpt,
    inputs,
)
from eagle_cli.errors import ParameterError
from eagle_cli.params import CaasSettings, ModelBackend, ReasonParams, ServerSettings


@command(app)
def serve(
    threshold: Annotated[Optional[str], typer.Option(help="Threshold artifact (path or id); default: the latest of "
                                                     "--category.", rich_help_panel=IN)] = None,
    category: CategoryOpt = None,
    host: Annotated[str, typer.Option(help="Address to listen on; 0.0.0.0 for every interface.",
                                      rich_help_panel=SERVER)] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.", rich_help_panel=SERVER)] = 8000,
    batch_size: Annotated[int, typer.Option(min=1, help="Requests scored together in one backbone forward.",
                                            rich_help_panel=SERVER)] = 8,
    max_wait_ms: Annotated[float, typer.Option(min=0, help="How long a request waits for others to share its "
                                               "forward, ms.", rich_help_panel=SERVER)] = 10.0,
    queue_size: Annotated[int, typer.Option("--queue", min=1, help="Requests that may wait; one more is answered "
                                            "503 busy at once.", rich_help_panel=SERVER)] = 64,
    max_bytes: Annotated[int, typer.Option(min=1, help="Largest upload, bytes (413 above).",
                                           rich_help_panel=SERVER)] = 50_000_000,
    max_pixels: Annotated[int, typer.Option(min=1, help="Largest image, pixels, read from the header before "
                                            "decoding (413 above).", rich_help_panel=SERVER)] = 40_000_000,
    api_key_env: Annotated[Optional[str], typer.Option(help="Environment variable holding the API key clients must "
                                                       "send; unset: no key.", rich_help_panel=SERVER)] = None,
    model: Annotated[Optional[str], typer.Option(help="Also ask this multimodal model (folder, hub id, preset, or "
                                                 "with --backend openai the served name) whether the part is "
                                                 "defective; its answer joins each reply.", rich_help_panel=MODEL)
                     ] = None,
    backend: Annotated[ModelBackend, typer.Option(help="hf: the model in this process; openai: a server.",
                                                  rich_help_panel=MODEL)] = REASON.backend,
    base_url: Annotated[str, typer.Option(envvar="EAGLE_BASE_URL", help="openai: the server's /v1 URL (several: "
                                          "comma-separated).", rich_help_panel=MODEL)] = ServerSettings().base_url,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Longest answer, tokens.", rich_help_panel=MODEL)
                              ] = REASON.max_new_tokens,
    caas: Annotated[bool, typer.Option("--caas", help="hf: strengthen attention to the image when the expert is "
                                       "unsure (default CAAS settings).", rich_help_panel=MODEL)] = False,
    sigma_px: Annotated[float, typer.Option("--sigma-px", min=0, help="Gaussian smoothing of the anomaly map, px.",
                                            rich_help_panel=EXPERT)] = SCORE.sigma_px,
    artifacts_root: ArtifactsOpt = Path("artifacts"), run: RunOpt = "default",
    device: DeviceOpt = SCORE.device, knn_backend: KnnBackendOpt = SCORE.knn_backend,
):
    """Serve the expert over HTTP: POST an image file to /inspect, get its score, verdict and boxes as JSON.

    Needs the serve extra (pip install 'eagle-cli[serve]'). /health says which threshold is served;
    /metrics is Prometheus text.

    Example: eagle serve --threshold 3f2a --port 8000, then curl --data-binary @part.png localhost:8000/inspect
    """
    try:
        import uvicorn

        from eagle_cli.service.app import create_app
        from eagle_cli.service.batching import BatchingScorer
    except ImportError as exc:
        raise ParameterError(f"eagle serve needs the serve extra ({exc.name} is missing): "
                             "pip install 'eagle-cli[serve]'.") from None
    from eagle_cli.expert.model import Expert

    refs = inputs(threshold, "threshold", category, artifacts_root, run)
    if len(refs) != 1:
        raise ParameterError(f"One threshold per service; {len(refs)} categories match. Pass --category or "
                             "--threshold.")
    api_key = None
    if api_key_env:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise ParameterError(f"--api-key-env {api_key_env}: that environment variable is empty or unset.")
    expert = Expert.load(refs[0], device=device, knn_backend=knn_backend, sigma_px=sigma_px, batch_size=batch_size)
    reasoner = None
    if model:
        from eagle_cli.service.reasoning import ServiceReasoner

        params = ReasonParams(model=model, backend=backend, device=device, max_new_tokens=max_new_tokens,
                              caas=CaasSettings() if caas else None, server=ServerSettings(base_url=base_url))
        category = refs[0].input("bank").input("features").params["category"]
        reasoner = ServiceReasoner(params, category=category, tau=expert.tau, s_max=expert.s_max)
    scorer = BatchingScorer(expert, batch_size=batch_size, max_wait_s=max_wait_ms / 1000, queue_size=queue_size)
    service = create_app(scorer, threshold_id=refs[0].id, max_bytes=max_bytes, max_pixels=max_pixels,
                         api_key=api_key, reasoner=reasoner)
    err.print(f"serving threshold [bold]{escape(str(refs[0].path))}[/] on http://{host}:{port} "
              "(POST /inspect, GET /health, GET /metrics)")
    try:
        uvicorn.run(service, host=host, port=port, log_level="warning")
    finally:
        scorer.close()
