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
from dataclasses import dataclass
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
from eagle_cli.service.batching import BatchingScorer, Busy, Judge
from eagle_cli.service.feedback import FeedbackStore, UnknownRequest

if TYPE_CHECKING:
    from eagle_cli.service.reasoning import ServiceReasoner


class _Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class Station:
    """One category on the line: its scorer, and optionally its model and its operator-feedback folder."""

    scorer: BatchingScorer
    reasoner: ServiceReasoner | None = None
    feedback: FeedbackStore | None = None


def create_app(stations: dict[str, Station], *, max_bytes: int, max_pixels: int, api_key: str | None = None,
               audit: AuditLog | None = None, reload: Callable[[str, str | None], Judge] | None = None) -> FastAPI:
    """The service over one station per category (``POST /inspect/{category}``; ``/inspect`` when there is one);
    ``audit`` records every verdict before it is answered; ``reload(category, threshold)`` loads what a threshold
    (id or path; None: the category's latest) judges with, for ``POST /reload``."""
    app = FastAPI(title="eagle inspection service")
    registry = CollectorRegistry()
    answered = Counter("eagle_requests", "Inspection requests by HTTP status.", ["status"], registry=registry)
    latency = Histogram("eagle_inspect_seconds", "Time from request to answer.", registry=registry,
                        buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
    batch_size = Histogram("eagle_batch_images", "Images per backbone forward.", registry=registry,
                           buckets=(1, 2, 4, 8, 16, 32, 64))
    Gauge("eagle_queue_waiting", "Requests waiting for the scorers.", registry=registry).set_function(
        lambda: sum(station.scorer.waiting for station in stations.values()))
    drift = {name: Gauge(f"eagle_drift_{name}", text, ["category"], registry=registry) for name, text in (
        ("capital", "The drift watch's betting capital; the alarm fires at 1/delta."),
        ("alarm", "1 once the drift watch has fired: new parts no longer look like the calibration."),
        ("parts", "Parts the drift watch has seen."))}
    reloading = asyncio.Lock()

    def authorised(request: Request) -> bool:
        if api_key is None:
            return True
        given = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix("Bearer ")
        return hmac.compare_digest(given.encode(), api_key.encode())

    def station_named(category: str | None) -> str:
        if category is None and len(stations) == 1:
            return next(iter(stations))
        if category not in stations:
            raise _Refused(404, f"no station {category!r}; this service inspects {', '.join(sorted(stations))} "
                                "(POST /inspect/CATEGORY)")
        return category

    def judge_state(category: str) -> dict:
        judge, drift_state = stations[category].scorer.judge, None
        if judge.watch is not None:
            state = judge.watch.state
            drift_state = {"status": state.status, "since_part": state.alarm_at, "parts": state.parts,
                           "capital": state.capital, "delta": judge.watch.delta}
        return {"threshold": judge.threshold_id, "tau": judge.expert.tau,
                "waiting": stations[category].scorer.waiting, "drift": drift_state}

    @app.get("/health")
    def health():
        every = {category: judge_state(category) for category in sorted(stations)}
        only = next(iter(every.values())) if len(every) == 1 else {}
        return {"status": "ok", "eagle": __version__, **only, "stations": every}

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
            given = json.loads(body) if body else {}
            spec, category = given.get("threshold"), station_named(given.get("category"))
        except (ValueError, AttributeError):
            return JSONResponse({"error": 'the body must be JSON like {"threshold": "ID", "category": "NAME"}, or '
                                 "empty for the latest threshold of the only category"}, status_code=422)
        except _Refused as refused:
            return JSONResponse({"error": refused.message}, status_code=refused.status)
        scorer = stations[category].scorer
        async with reloading:  # one reload at a time; scoring goes on meanwhile
            try:
                judge = await run_in_threadpool(reload, category, spec)
            except Exception as exc:  # a failed load keeps the old expert, and says why
                return JSONResponse({"error": f"{exc}; still serving {scorer.judge.threshold_id}"}, status_code=422)
            old = scorer.swap(judge)
        return {"category": category, "threshold": judge.threshold_id, "previous": old.threshold_id}

    @app.get("/metrics")
    def metrics(request: Request):
        if not authorised(request):
            return JSONResponse({"error": "a valid API key is needed"}, status_code=401)
        for category, station in stations.items():
            watch = station.scorer.judge.watch
            if watch is not None:
                state = watch.state
                drift["capital"].labels(category).set(state.capital)
                drift["alarm"].labels(category).set(state.alarm_at is not None)
                drift["parts"].labels(category).set(state.parts)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def inspect(request: Request, category: str | None):
        start = time.perf_counter()
        request_id = uuid.uuid4().hex
        try:
            if not authorised(request):
                raise _Refused(401, "a valid API key is needed (Authorization: Bearer KEY or X-API-Key)")
            category = station_named(category)
            station = stations[category]
            body = await _read_limited(request, max_bytes)
            image = await run_in_threadpool(_decode, body, max_pixels, station.scorer.expert.geometry.frame)
            result = await run_in_threadpool(station.scorer.inspect, image)
        except _Refused as refused:
            answered.labels(str(refused.status)).inc()
            headers = {"Retry-After": "1"} if refused.status == 503 else None
            return JSONResponse({"error": refused.message}, status_code=refused.status, headers=headers)
        except Busy:
            answered.labels("503").inc()
            return JSONResponse({"error": "busy: the queue is full, retry shortly"}, status_code=503,
                                headers={"Retry-After": "1"})
        answer = None
        if station.reasoner is not None:
            try:
                answer = await run_in_threadpool(station.reasoner.ask, image, result)
            except EagleError as exc:  # the expert's verdict stands; say why the model's word is missing
                answer = {"error": str(exc)}
        answered.labels("200").inc()
        latency.observe(time.perf_counter() - start)
        batch_size.observe(result.batch)
        reply = {"request_id": request_id, "category": category, "score": result.score,
                 "anomalous": result.anomalous, "uncertain": result.uncertain, "p_value": result.p_value,
                 "tau": result.tau, "boxes": result.boxes, "width": image.width, "height": image.height,
                 "threshold": result.threshold, "eagle": __version__, "answer": answer}
        keeps_image = (audit is not None and audit.images != "none") or station.feedback is not None
        kind = _kind(body) if keeps_image else "img"
        if audit is not None:
            entry = {"time": datetime.now(timezone.utc).isoformat(), "image_sha256": hashlib.sha256(body).hexdigest(),
                     "bytes": len(body), **reply}
            if audit.images == "none":
                audit.record(entry)  # one short append: cheaper here than a hop to a worker thread
            else:
                await run_in_threadpool(audit.record, entry, body, kind)
        if station.feedback is not None:
            station.feedback.remember(request_id, body, kind,
                                      {key: reply[key] for key in ("category", "score", "anomalous", "threshold")})
        return reply

    @app.post("/inspect")
    async def inspect_the_only_station(request: Request):
        return await inspect(request, None)

    @app.post("/inspect/{category}")
    async def inspect_a_station(request: Request, category: str):
        return await inspect(request, category)

    @app.post("/feedback")
    async def operator_feedback(request: Request):
        if not authorised(request):
            return JSONResponse({"error": "a valid API key is needed"}, status_code=401)
        stores = [station.feedback for station in stations.values() if station.feedback is not None]
        if not stores:
            return JSONResponse({"error": "feedback is off; start eagle serve with --feedback-dir DIR"},
                                status_code=404)
        try:
            given = json.loads(await request.body())
            request_id, label, note = str(given["request_id"]), given["label"], str(given.get("note", ""))
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": 'the body must be JSON like {"request_id": "…", "label": "good" or '
                                 '"defect", "note": "…"}'}, status_code=422)
        store = next((store for store in stores if store.remembers(request_id)), None)
        if store is None:
            return JSONResponse({"error": f"request {request_id} is not among the last {stores[0].window} of its "
                                 "station this service answered"}, status_code=404)
        try:
            path = await run_in_threadpool(store.label, request_id, label, note)
        except (ValueError, UnknownRequest) as exc:
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
