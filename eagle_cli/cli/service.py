"""eagle serve: the expert of a threshold artifact as an HTTP inspection service."""

from __future__ import annotations

import os
import signal
import threading
from typing import Annotated, Optional

from rich.markup import escape

from eagle_cli.artifacts import ArtifactRef
from eagle_cli.cli.app import app, command, err, leave_out, only
from eagle_cli.cli.options import artifact_option, inputs
from eagle_cli.errors import ParameterError
from eagle_cli.params import DataParams, ReasonParams, ScoreParams, ServeParams, StoreParams


@command(app)
def serve(
    data: Annotated[DataParams, only("category")], settings: ServeParams, score: ScoreParams,
    reason: Annotated[ReasonParams, leave_out("prompt_batch")], store: Annotated[StoreParams, only("artifacts", "run")],
    threshold: Annotated[Optional[str], artifact_option("threshold", "The threshold to serve: a threshold")] = None,
):
    """Serve one category's expert over HTTP: POST an image file to /inspect, get its score, verdict and boxes as
    JSON. --threshold names the threshold; else --category names the category (needed when the run has several).

    Needs the serve extra (pip install 'eagle-cli[serve]'). Every answer carries a request id, the part's
    conformal p-value, the threshold id and eagle's version. /health says which threshold is served and whether
    the drift watch finds new parts still exchangeable with the calibration (ok, or drifting since part N);
    /metrics is Prometheus text. --runtime onnx --export DIR serves an `eagle export` folder without torch. A new
    threshold is taken up without a restart: POST /reload (with the client key; body {"threshold": "ID"}, or
    empty for the category's latest) or SIGHUP (the latest); requests in flight finish on the old one. With
    --feedback-dir DIR, POST /feedback {"request_id": …, "label": "good" or "defect"} files the part for eagle
    update-bank --good DIR/good.

    Example: eagle serve --threshold 3f2a --port 8000, then curl --data-binary @part.png localhost:8000/inspect
    """
    try:
        import uvicorn

        from eagle_cli.service.app import create_app
        from eagle_cli.service.audit import AuditLog
        from eagle_cli.service.batching import BatchingScorer, Station
        from eagle_cli.service.feedback import FeedbackStore
    except ImportError as exc:
        raise ParameterError(f"eagle serve needs the serve extra ({exc.name} is missing): "
                             "pip install 'eagle-cli[serve]'.") from None
    from eagle_cli.drift import DriftWatch
    from eagle_cli.formats.calibration import calibration_scores
    from eagle_cli.formats.expert import scoring_expert

    refs = inputs(threshold, "threshold", data.category, store)
    if len(refs) != 1:
        raise ParameterError(f"One category per service; {len(refs)} match ({', '.join(r.category for r in refs)}). "
                             "Pass --category NAME or --threshold.")
    client_key = None
    if settings.client_key_env:
        client_key = os.environ.get(settings.client_key_env)
        if not client_key:
            raise ParameterError(f"--client-key-env {settings.client_key_env}: that environment variable is empty or "
                                 "unset.")
    category = refs[0].category

    def station_of(ref: ArtifactRef) -> Station:
        if ref.category != category:
            raise ParameterError(f"threshold {ref.id} is of category {ref.category}; this service serves {category}")
        watch = DriftWatch(calibration_scores(ref.input("calibration")), delta=settings.drift_delta)
        return Station(scoring_expert(ref, score), ref.id, watch)

    def reload(spec: str | None) -> Station:
        """The station of a threshold (id or path), or of the category's latest: after fit-threshold or
        update-bank, and for --runtime onnx once it is exported to --export."""
        return station_of(inputs(spec, "threshold", (category,), store)[0])

    first = station_of(refs[0])
    reasoner = None
    if settings.with_model:
        from eagle_cli.service.reasoning import ServiceReasoner

        reasoner = ServiceReasoner(reason, category=category)
    scorer = BatchingScorer(first.expert, threshold_id=first.threshold_id, watch=first.watch,
                            batch_size=score.batch_size, max_wait_s=settings.max_wait_ms / 1000,
                            queue_size=settings.queue)
    audit = None
    if settings.audit_log is not None:
        audit = AuditLog(settings.audit_log, max_bytes=int(settings.audit_max_mb * 1e6), images=settings.audit_images)
    feedback = FeedbackStore(settings.feedback_dir) if settings.feedback_dir is not None else None
    service = create_app(scorer, max_bytes=settings.max_bytes, max_pixels=settings.max_image_pixels,
                         api_key=client_key, reasoner=reasoner, audit=audit, reload=reload, feedback=feedback)

    def on_hangup(*_) -> None:
        def work() -> None:
            try:
                old = scorer.swap(reload(None))
                err.print(f"reloaded: serving threshold {scorer.station.threshold_id} (was {old.threshold_id})")
            except Exception as exc:  # the old expert stays
                err.print(f"[red]reload failed:[/] {escape(str(exc))}; still serving {scorer.station.threshold_id}")

        threading.Thread(target=work, name="eagle-reload", daemon=True).start()

    signal.signal(signal.SIGHUP, on_hangup)
    err.print(f"serving threshold [bold]{escape(str(refs[0].path))}[/] on http://{settings.host}:{settings.port} "
              "(POST /inspect, GET /health, GET /metrics)"
              + (f"; auditing to [bold]{escape(str(settings.audit_log))}[/]" if audit else ""))
    try:
        uvicorn.run(service, host=settings.host, port=settings.port, log_level="warning")
    finally:
        scorer.close()
        if audit is not None:
            audit.close()
