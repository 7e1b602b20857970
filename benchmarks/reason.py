"""Benchmark eagle reason: prompts/s in process with and without CAAS, and through a server at concurrency 1 and 8.

    python -m benchmarks.reason                                    # builds a tiny Qwen2.5-VL, CPU
    python -m benchmarks.reason --model Qwen/Qwen2.5-VL-7B-Instruct --device cuda --caas-layers 9-14 \\
        --server-url http://127.0.0.1:8000/v1                      # a real model; vLLM already serving it

The prompts are synthetic inspection prompts (query image, box image, question) at --image-size.
Every configuration answers the same prompts once untimed (warm-up), then timed --repeats times;
the figure is the median. Ratios are within this run. Run from the repository root (it borrows
the tiny-model builder and the server launcher from tests/).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw


def _prompts(n: int, size: int):
    from eagle_cli.mllm.prompt import Prompt

    prompts = []
    for i in range(n):
        query = Image.new("RGB", (size, size), (120 + i % 50, 120, 130))
        boxed = query.copy()
        ImageDraw.Draw(boxed).rectangle([size // 4, size // 4, size // 2, size // 2], outline=(255, 0, 0), width=3)
        prompts.append(Prompt([
            {"type": "text", "text": "You inspect manufactured parts. Reply with the letter of one option only."},
            {"type": "text", "text": "This is the query image."}, {"type": "image", "image": query, "role": "query"},
            {"type": "text", "text": "The next image marks the unusual area."},
            {"type": "image", "image": boxed, "role": "boxes"},
            {"type": "text", "text": "Is there any defect in the object?\nA. Yes\nB. No"},
        ], uncertain=True))
    return prompts


def _time(backend, prompts, settings, repeats: int) -> float:
    backend.generate(prompts, settings)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        backend.generate(prompts, settings)
        runs.append(time.perf_counter() - start)
    return len(prompts) / statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model folder or hub id (default: build a tiny Qwen2.5-VL)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--caas-layers", default="1-2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--server-url", help="an already running OpenAI-compatible server (default: start "
                                             "transformers serve on the tiny model)")
    args = parser.parse_args()

    import torch

    from eagle_cli.mllm.hf import HFBackend
    from eagle_cli.mllm.openai_api import OpenAIBackend
    from eagle_cli.params import CaasSettings, ServerSettings, parse_layers

    if args.device == "cpu":
        torch.set_num_threads(2)
    workdir = Path(tempfile.mkdtemp())
    model = args.model
    if model is None:
        from tests.mllm.tiny import build_qwen25_vl

        model = str(build_qwen25_vl(workdir / "tiny-qwen"))
    prompts = _prompts(args.prompts, args.image_size)
    backend = HFBackend.load(model, device=args.device, max_new_tokens=args.max_new_tokens)
    layers = parse_layers(args.caas_layers)
    rows = []
    for name, settings in [("hf sdpa", None), ("hf caas renorm", CaasSettings(layers=layers)),
                           ("hf caas scale", CaasSettings(layers=layers, mode="scale"))]:
        batches = [prompts[i:i + args.batch_size] for i in range(0, len(prompts), args.batch_size)]
        rate = len(prompts) / sum(len(b) / _time(backend, b, settings, args.repeats) for b in batches)
        rows.append((name, rate))
    del backend

    def served(url):
        for concurrency in (1, 8):
            client = OpenAIBackend(model, ServerSettings(base_url=url, concurrency=concurrency),
                                   max_new_tokens=args.max_new_tokens)
            rows.append((f"openai concurrency {concurrency}", _time(client, prompts, None, args.repeats)))

    if args.server_url:
        served(args.server_url)
    else:
        from tests.mllm.servers import transformers_serve

        with transformers_serve(Path(model)) as (url, _):
            served(url)
    base = rows[0][1]
    print(f"model {model}, {args.prompts} prompts, batch {args.batch_size}, images {args.image_size}px, "
          f"{args.max_new_tokens} new tokens, device {args.device}")
    for name, rate in rows:
        print(f"{name:24} {rate:8.2f} prompts/s   {base / rate:5.2f}x the time of hf sdpa")
    renorm_cost = base / rows[1][1] - 1
    print(f"CAAS renorm costs {renorm_cost * 100:+.1f} % over plain SDPA (target <= +10 %): "
          f"{'ok' if renorm_cost <= 0.10 else 'MISSED'}")


if __name__ == "__main__":
    main()
