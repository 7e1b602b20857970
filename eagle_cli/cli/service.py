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
    """Serve the experts of one or more categories over HTTP: POST an image file to /inspect/CATEGORY (or
    /inspect when one is served), get its score, verdict and boxes as JSON. --threshold names a threshold; else
    --category names the categories (default: every category of the run, each its latest threshold). Categories
    whose features were computed alike share one backbone.

    Needs the serve extra (pip install 'eagle-cli[serve]'). Every answer carries a request id, the part's
    conformal p-value, the threshold id and eagle's version. /health says which threshold is served and whether
    the drift watch finds new parts still exchangeable with the calibration (ok, or drifting since part N);
    /metrics is Prometheus text. --runtime onnx --export DIR serves an `eagle export` folder without torch. A new
    threshold is taken up without a restart: POST /reload (with the client key; body {"threshold": "ID"}, or
    empty for the category's latest) or SIGHUP (the latest); requests in flight finish on the old one. With
    --feedback-dir DIR, POST /feedback {"request_id": …, "label": "good" or "defect"} files the part for eagle
    update-bank --good DIR/CATEGORY/good.

    Example: eagle serve --category bottle,cable --port 8000, then curl --data-binary @part.png
    localhost:8000/inspect/bottle
    """
    try:
        import uvicorn

        from eagle_cli.service.app import Station, create_app
        from eagle_cli.service.audit import AuditLog
        from eagle_cli.service.batching import BatchingScorer, Judge
        from eagle_cli.service.feedback import FeedbackStore
    except ImportError as exc:
        raise ParameterError(f"eagle serve needs the serve extra ({exc.name} is missing): "
                             "pip install 'eagle-cli[serve]'.") from None
    from eagle_cli.drift import DriftWatch
    from eagle_cli.formats.calibration import calibration_scores
    from eagle_cli.formats.expert import scoring_expert, share_backbone

    refs = inputs(threshold, "threshold", data.category, store)
    client_key = None
    if settings.client_key_env:
        client_key = os.environ.get(settings.client_key_env)
        if not client_key:
            raise ParameterError(f"--client-key-env {settings.client_key_env}: that environment variable is empty or "
                                 "unset.")

    def judge_of(ref: ArtifactRef, category: str, beside: list) -> Judge:
        if ref.category != category:
            raise ParameterError(f"threshold {ref.id} is of category {ref.category}; this station serves {category}")
        expert = scoring_expert(ref, score)
        for other in beside:  # one backbone for the stations whose features were computed alike
            if share_backbone(expert, other):
                break
        watch = DriftWatch(calibration_scores(ref.input("calibration")), delta=settings.drift_delta)
        return Judge(expert, ref.id, watch)

    judges: dict[str, Judge] = {}
    for ref in refs:
        judges[ref.category] = judge_of(ref, ref.category, [judge.expert for judge in judges.values()])
    stations: dict[str, Station] = {}
    for category, judge in judges.items():
        reasoner = None
        if settings.with_model:
            from eagle_cli.service.reasoning import ServiceReasoner

            reasoner = ServiceReasoner(reason, category=category)
        feedback = FeedbackStore(settings.feedback_dir / category) if settings.feedback_dir is not None else None
        scorer = BatchingScorer(judge.expert, threshold_id=judge.threshold_id, watch=judge.watch,
                                batch_size=score.batch_size, max_wait_s=settings.max_wait_ms / 1000,
                                queue_size=settings.queue)
        stations[category] = Station(scorer, reasoner, feedback)

    def reload(category: str, spec: str | None) -> Judge:
        """What a threshold (id or path), or the category's latest, judges with: after fit-threshold or
        update-bank, and for --runtime onnx once it is exported to --export."""
        beside = [station.scorer.expert for station in stations.values()]
        return judge_of(inputs(spec, "threshold", (category,), store)[0], category, beside)

    audit = None
    if settings.audit_log is not None:
        audit = AuditLog(settings.audit_log, max_bytes=int(settings.audit_max_mb * 1e6), images=settings.audit_images)
    service = create_app(stations, max_bytes=settings.max_bytes, max_pixels=settings.max_image_pixels,
                         api_key=client_key, audit=audit, reload=reload)

    def on_hangup(*_) -> None:
        def work() -> None:
            for category, station in stations.items():
                try:
                    old = station.scorer.swap(reload(category, None))
                    err.print(f"reloaded {category}: serving threshold {station.scorer.judge.threshold_id} (was "
                              f"{old.threshold_id})")
                except Exception as exc:  # the old expert stays
                    err.print(f"[red]reload of {category} failed:[/] {escape(str(exc))}; still serving "
                              f"{station.scorer.judge.threshold_id}")

        threading.Thread(target=work, name="eagle-reload", daemon=True).start()

    signal.signal(signal.SIGHUP, on_hangup)
    routes = ", ".join(f"POST /inspect/{category}" for category in stations)
    err.print(f"serving {', '.join(f'{c} (threshold {j.threshold_id})' for c, j in judges.items())} on "
              f"http://{settings.host}:{settings.port} ({routes}, GET /health, GET /metrics)"
              + (f"; auditing to [bold]{escape(str(settings.audit_log))}[/]" if audit else ""))
    try:
        uvicorn.run(service, host=settings.host, port=settings.port, log_level="warning")
    finally:
        for station in stations.values():
            station.scorer.close()
        if audit is not None:
            audit.close()
