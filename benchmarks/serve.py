"""The inspection service under load against eagle score on the same images.

    python -m benchmarks.serve [--clients 8] [--requests 200] [--batch-size 8] [--max-wait-ms 10]

Realistic synthetic brick (MobileNetV2 ImageNet weights, 224 crop, 60 training images, default
threshold), 2 threads. Baseline: ``run_score`` (the ``eagle score`` stage) over the test images,
in images per second. Then the service runs in this process (uvicorn on loopback) and ``--clients``
threads each POST ``--requests`` test images one after another; every answer is checked against
the stage's score for that image, and each request must get exactly one answer. The load test runs twice
with and twice without the audit log (every verdict appended to a JSON Lines file), alternated; best of each.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from eagle_cli import load_expert
from eagle_cli.context import Context
from eagle_cli.data import DataSource
from eagle_cli.data.synthetic import generate
from eagle_cli.expert.faiss_after_torch import faiss
from eagle_cli.formats.scores import read_scores
from eagle_cli.params import BankParams, CalibrationParams, ExtractParams, ScoreParams, ThresholdParams
from eagle_cli.service.app import Station, create_app
from eagle_cli.service.audit import AuditLog
from eagle_cli.service.batching import BatchingScorer
from eagle_cli.stages.extract import run_extract
from eagle_cli.stages.fit_bank import run_fit_bank
from eagle_cli.stages.fit_threshold import run_threshold
from eagle_cli.stages.score import ScoreInputs, run_score
from tests.mllm.servers import serving_in_background

EXTRACT = ExtractParams(backbone="mobilenet_v2", weights="imagenet", device="cpu")


def _client(url: str, bodies: list[bytes]) -> list[tuple[float, dict]]:
    answers = []
    for body in bodies:
        start = time.perf_counter()
        request = urllib.request.Request(url + "/inspect", data=body, method="POST")
        with urllib.request.urlopen(request, timeout=300) as response:
            answers.append((time.perf_counter() - start, json.loads(response.read())))
    return answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=200, help="Requests per client.")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-wait-ms", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "data"
        generate(root, categories=("brick",), variation="realistic", n_train=60, n_test_good=40,
                 n_test_per_defect=10, seed=0)
        context = Context(artifacts=Path(scratch) / "artifacts")
        bank = run_fit_bank(run_extract(DataSource(root=root), "brick", "train", EXTRACT, context=context),
                            BankParams(), context=context)
        threshold = run_threshold(bank, CalibrationParams(), ThresholdParams(), context=context)
        start = time.perf_counter()
        scores = run_score(threshold, ScoreInputs(source=DataSource(root=root), category="brick"),
                           ScoreParams(device="cpu", batch_size=args.batch_size), context=replace(context, force=True))
        stage_rate = len(read_scores(scores)) / (time.perf_counter() - start)
        expected = {Path(row.path).read_bytes(): row.score for row in read_scores(scores)}
        images = list(expected)
        plan = [[images[(c * 7 + i) % len(images)] for i in range(args.requests)] for c in range(args.clients)]
        expert = load_expert(threshold, ScoreParams(device="cpu", batch_size=args.batch_size))
        runs = {}
        for audited in (False, True, False, True):  # alternated: the machine's load drifts
            audit = AuditLog(Path(scratch) / "audit" / "audit.jsonl") if audited else None
            outcome = _serve(expert, threshold.id, plan, images, args, audit)
            if audited not in runs or outcome[1] < runs[audited][1]:
                runs[audited] = outcome
            if audit is not None:
                audit.close()
        results, seconds, batches = runs[False]
    answered = sum(len(r) for r in results)
    wrong = sum(abs(answer["score"] - expected[body]) > 1e-4 * max(1.0, abs(expected[body]))
                for bodies, r in zip(plan, results, strict=True) for body, (_, answer) in zip(bodies, r, strict=True))
    latencies = np.array([lat for r in results for lat, _ in r])
    sent = args.clients * args.requests
    print(f"\n{args.clients} clients x {args.requests} requests, batch {args.batch_size}, "
          f"wait {args.max_wait_ms:g} ms, {args.threads} threads")
    print("| | images/s | p50 latency | p99 latency | answered / sent | answers ≠ eagle score |")
    print("|---|---|---|---|---|---|")
    print(f"| eagle score (stage) | {stage_rate:.1f} | | | | |")
    print(f"| eagle serve | {answered / seconds:.1f} ({answered / seconds / stage_rate:.2f}×) | "
          f"{np.percentile(latencies, 50) * 1000:.0f} ms | {np.percentile(latencies, 99) * 1000:.0f} ms | "
          f"{answered} / {sent} | {wrong} |")
    audited = sum(len(r) for r in runs[True][0]) / runs[True][1]
    print(f"| eagle serve + audit log | {audited:.1f} ({audited / (answered / seconds):.2f}× without) | | | | |")
    print(f"forwards: {batches} for {answered + 4} requests; best of two runs each, with and without the audit log")


def _serve(expert, threshold_id: str, plan: list[list[bytes]], images: list[bytes], args, audit: AuditLog | None):
    """One load test of the service: (each client's latencies and answers, seconds, forwards)."""
    scorer = BatchingScorer(expert, threshold_id=threshold_id, batch_size=args.batch_size,
                            max_wait_s=args.max_wait_ms / 1000)
    app = create_app({"brick": Station(scorer)}, max_bytes=50_000_000, max_pixels=40_000_000, audit=audit)
    with serving_in_background(app) as url, ThreadPoolExecutor(args.clients) as pool:
        _client(url, images[:4])  # warm-up: first forward, faiss and thread start-up
        start = time.perf_counter()
        results = list(pool.map(lambda bodies: _client(url, bodies), plan))
        seconds = time.perf_counter() - start
    scorer.close()
    return results, seconds, scorer.batches


if __name__ == "__main__":
    main()
