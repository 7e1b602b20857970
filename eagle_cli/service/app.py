"""The HTTP face of the inspection service: one route that inspects, plus health and metrics.

``POST /inspect`` takes the image file itself as the request body (any format Pillow reads) and
answers JSON: a request id, score, verdict, uncertain flag (the CAAS window), the part's conformal p-value,
boxes in the image's own pixels, the threshold id and eagle's version and, when a model is configured, its
answer to the defect question. Every scored part feeds the drift watch (``drift.py``): ``/health`` says ok or
drifting (since which part), ``/metrics`` carries its capital and alarm.
The body is decoded as `eagle score` decodes files (``data/images.py``), so an image is judged, or
refused for the same reason, by both: too large (413; bytes and header pixels are checked before
decoding), not an image (415), truncated, floating-point or smaller than the expert's frame (422).
A full queue answers 503 with Retry-After, so a line controller can back off instead of piling up.
With a client key set, ``/inspect`` and ``/metrics`` need ``Authorization: Bearer KEY`` (or
``X-API-Key: KEY``); ``/health`` is open.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import time
import uuid
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from PIL import Image
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.concurrency import run_in_threadpool

from eagle_cli import __version__
from eagle_cli.data.images import decode
from eagle_cli.errors import EagleError, ImageError
from eagle_cli.service.audit import AuditLog
from eagle_cli.service.batching import BatchingScorer, Busy, Station
from eagle_cli.service.feedback import FeedbackStore, UnknownRequest

if TYPE_CHECKING:
    from eagle_cli.service.reasoning import ServiceReasoner


class _Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def create_app(scorer: BatchingScorer, *, max_bytes: int, max_pixels: int, api_key: str | None = None,
               reasoner: ServiceReasoner | None = None, audit: AuditLog | None = None,
               reload: Callable[[str | None], Station] | None = None,
               feedback: FeedbackStore | None = None) -> FastAPI:
    """The service over ``scorer`` (and ``reasoner``, whose answer joins each reply); ``audit`` records every
    verdict before it is answered; ``reload`` loads the station a threshold (id or path; None: the category's
    latest) names, for ``POST /reload``; ``feedback`` files the parts operators label (``POST /feedback``)."""
    app = FastAPI(title="eagle inspection service")
    registry = CollectorRegistry()
    answered = Counter("eagle_requests", "Inspection requests by HTTP status.", ["status"], registry=registry)
    latency = Histogram("eagle_inspect_seconds", "Time from request to answer.", registry=registry,
                        buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
    batch_size = Histogram("eagle_batch_images", "Images per backbone forward.", registry=registry,
                           buckets=(1, 2, 4, 8, 16, 32, 64))
    Gauge("eagle_queue_waiting", "Requests waiting for the scorer.", registry=registry).set_function(
        lambda: scorer.waiting)
    if scorer.station.watch is not None:
        # Read through the scorer: a reload brings a new threshold and a new watch.
        Gauge("eagle_drift_capital", "The drift watch's betting capital; the alarm fires at 1/delta.",
              registry=registry).set_function(lambda: scorer.station.watch.state.capital)
        Gauge("eagle_drift_alarm", "1 once the drift watch has fired: new parts no longer look like the "
              "calibration.", registry=registry).set_function(lambda: scorer.station.watch.alarm_at is not None)
        Gauge("eagle_drift_parts", "Parts the drift watch has seen.", registry=registry).set_function(
            lambda: scorer.station.watch.parts)
    reloading = asyncio.Lock()

    def authorised(request: Request) -> bool:
        if api_key is None:
            return True
        given = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix("Bearer ")
        return hmac.compare_digest(given.encode(), api_key.encode())

    @app.get("/health")
    def health():
        station, drift = scorer.station, None
        if station.watch is not None:
            state = station.watch.state
            drift = {"status": state.status, "since_part": state.alarm_at, "parts": state.parts,
                     "capital": state.capital, "delta": station.watch.delta}
        return {"status": "ok", "threshold": station.threshold_id, "tau": station.expert.tau,
                "waiting": scorer.waiting, "eagle": __version__, "drift": drift}

    @app.post("/reload")
    async def reload_threshold(request: Request):
        if api_key is None:
            return JSONResponse({"error": "reloading over HTTP needs a client key (--client-key-env); or send the "
                                 "service SIGHUP"}, status_code=403)
        if not authorised(request):
            return JSONResponse({"error": "a valid API key is needed"}, status_code=401)
        if reload is None:
            return JSONResponse({"error": "this service cannot reload"}, status_code=404)
        body = await request.body()
        try:
            spec = json.loads(body).get("threshold") if body else None
        except (ValueError, AttributeError):
            return JSONResponse({"error": 'the body must be JSON like {"threshold": "ID"}, or empty for the '
                                 "category's latest threshold"}, status_code=422)
        async with reloading:  # one reload at a time; scoring goes on meanwhile
            try:
                station = await run_in_threadpool(reload, spec)
            except Exception as exc:  # a failed load keeps the old expert, and says why
                return JSONResponse({"error": f"{exc}; still serving {scorer.station.threshold_id}"},
                                    status_code=422)
            old = scorer.swap(station)
        return {"threshold": station.threshold_id, "previous": old.threshold_id}

    @app.get("/metrics")
    def metrics(request: Request):
        if not authorised(request):
            return JSONResponse({"error": "a valid API key is needed"}, status_code=401)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/inspect")
    async def inspect(request: Request):
        start = time.perf_counter()
        request_id = uuid.uuid4().hex
        try:
            if not authorised(request):
                raise _Refused(401, "a valid API key is needed (Authorization: Bearer KEY or X-API-Key)")
            body = await _read_limited(request, max_bytes)
            image = await run_in_threadpool(_decode, body, max_pixels, scorer.expert.geometry.frame)
            result = await run_in_threadpool(scorer.inspect, image)
        except _Refused as refused:
            answered.labels(str(refused.status)).inc()
            headers = {"Retry-After": "1"} if refused.status == 503 else None
            return JSONResponse({"error": refused.message}, status_code=refused.status, headers=headers)
        except Busy:
            answered.labels("503").inc()
            return JSONResponse({"error": "busy: the queue is full, retry shortly"}, status_code=503,
                                headers={"Retry-After": "1"})
        answer = None
        if reasoner is not None:
            try:
                answer = await run_in_threadpool(reasoner.ask, image, result)
            except EagleError as exc:  # the expert's verdict stands; say why the model's word is missing
                answer = {"error": str(exc)}
        answered.labels("200").inc()
        latency.observe(time.perf_counter() - start)
        batch_size.observe(result.batch)
        reply = {"request_id": request_id, "score": result.score, "anomalous": result.anomalous,
                 "uncertain": result.uncertain, "p_value": result.p_value, "tau": result.tau,
                 "boxes": result.boxes, "width": image.width, "height": image.height, "threshold": result.threshold,
                 "eagle": __version__, "answer": answer}
        kind = _kind(body) if audit is not None or feedback is not None else "img"
        if audit is not None:
            entry = {"time": datetime.now(timezone.utc).isoformat(), "image_sha256": hashlib.sha256(body).hexdigest(),
                     "bytes": len(body), **reply}
            await run_in_threadpool(audit.record, entry, body, kind)
        if feedback is not None:
            feedback.remember(request_id, body, kind, {key: reply[key] for key in ("score", "anomalous", "threshold")})
        return reply

    @app.post("/feedback")
    async def operator_feedback(request: Request):
        if not authorised(request):
            return JSONResponse({"error": "a valid API key is needed"}, status_code=401)
        if feedback is None:
            return JSONResponse({"error": "feedback is off; start eagle serve with --feedback-dir DIR"},
                                status_code=404)
        try:
            given = json.loads(await request.body())
            request_id, label, note = given["request_id"], given["label"], str(given.get("note", ""))
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": 'the body must be JSON like {"request_id": "…", "label": "good" or '
                                 '"defect", "note": "…"}'}, status_code=422)
        try:
            path = await run_in_threadpool(feedback.label, str(request_id), label, note)
        except UnknownRequest:
            return JSONResponse({"error": f"request {request_id} is not among the last {feedback.window} this "
                                 "service answered"}, status_code=404)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
        return {"request_id": request_id, "label": label, "image": str(path)}

    return app


async def _read_limited(request: Request, max_bytes: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise _Refused(413, f"the upload is {int(declared)} bytes; the limit is {max_bytes} (--max-bytes)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise _Refused(413, f"the upload exceeds {max_bytes} bytes (--max-bytes)")
        chunks.append(chunk)
    if not size:
        raise _Refused(422, "the request body is empty; send the image file as the body")
    return b"".join(chunks)


#: How an image :func:`decode` refuses is answered.
_STATUS = {"too_large": 413, "not_image": 415}


def _kind(body: bytes) -> str:
    """The file suffix of an uploaded image's format, for keeping it beside the audit log."""
    try:
        return (Image.open(io.BytesIO(body)).format or "img").lower()
    except Exception:  # it was decoded once already; a name is all that is asked here
        return "img"


def _decode(body: bytes, max_pixels: int, min_side: int) -> Image.Image:
    """The uploaded image as `eagle score` would read it from a file, or the refusal it would list."""
    try:
        return decode(body, min_side=min_side, max_pixels=max_pixels)
    except ImageError as exc:
        hint = " (--max-image-pixels)" if exc.kind == "too_large" else ""
        raise _Refused(_STATUS.get(exc.kind, 422), f"{exc}{hint}") from None
