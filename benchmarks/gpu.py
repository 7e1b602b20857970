"""The expert stages and the reasoning path on a CUDA GPU, in one table.

    python benchmarks/gpu.py                        # a GPU: WideResNet-50 at 224, a Qwen2.5-VL-7B-shaped model
    python benchmarks/gpu.py --tiny --device cpu    # tiny settings on any machine (the tests run this)

Expert: generated images (random backbone weights: timing only); extraction with features stored
in float32 and in float16, the coreset, and scoring with the kNN search on torch (the GPU) and on
faiss (faiss-cpu, or faiss-gpu if you installed it). Reasoning: a model of Qwen2.5-VL-7B's shape
built from its configuration with random weights in bf16 (no download; a tiny Qwen2.5-VL with
--tiny), answering the same inspection prompts with plain SDPA, CAAS renorm and CAAS scale at
several batch sizes; CAAS acts on every prompt (all are in the window). Run from the repository
root. Targets: CAAS renorm ≥ 0.9× plain SDPA throughput; scoring ≥ 100 images/s for WideResNet-50.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

# tests/ (the tiny model builder) and benchmarks/ are not installed: run from a checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: Qwen2.5-VL-7B-Instruct's published shape (config.json); the token ids come from the tokenizer used.
QWEN_7B_TEXT = dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                    num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=128000, rope_theta=1e6,
                    rms_norm_eps=1e-6, rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]})
QWEN_7B_VISION = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                      patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                      fullatt_block_indexes=[7, 15, 23, 31], hidden_act="silu")


def _synchronise(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def expert(tmp: Path, *, tiny: bool, device: str) -> list[tuple[str, str]]:
    from eagle_cli.context import Context
    from eagle_cli.data import DataSource
    from eagle_cli.data.synthetic import generate
    from eagle_cli.params import BankParams, CalibrationParams, ExtractParams, ScoreParams, ThresholdParams
    from eagle_cli.stages.extract import run_extract
    from eagle_cli.stages.fit_bank import run_fit_bank
    from eagle_cli.stages.fit_threshold import run_threshold
    from eagle_cli.stages.score import ScoreInputs, run_score

    n_train, n_test = (8, 8) if tiny else (200, 200)
    size, resize, crop = (96, 96, 80) if tiny else (256, 256, 224)
    generate(tmp / "data", categories=("gravel",), n_train=n_train, n_test_good=n_test // 2,
             n_test_per_defect=n_test // 8, size=size)
    source = DataSource(root=tmp / "data")
    base = ExtractParams(backbone="mobilenet_v2" if tiny else "wide_resnet50_2", weights="none", resize=resize,
                         crop=crop, batch_size=32 if not tiny else 4, device=device)
    rows = []
    for feature_dtype in ("float32", "float16"):
        context = Context(artifacts=tmp / f"artifacts-{feature_dtype}")
        params = replace(base, feature_dtype=feature_dtype)
        start = time.perf_counter()
        features = run_extract(source, "gravel", "train", params, context=context)
        _synchronise(device)
        rows.append((f"extract ({feature_dtype} stored)", f"{n_train / (time.perf_counter() - start):.1f} img/s"))
        start = time.perf_counter()
        bank = run_fit_bank(features, BankParams(), context=context)
        rows.append((f"fit-bank ({feature_dtype})", f"{time.perf_counter() - start:.2f} s"))
        threshold = run_threshold(bank, CalibrationParams(device=device), ThresholdParams("k-sigma"), context=context)
        for knn_backend in ("torch", "faiss"):
            start = time.perf_counter()
            scored = run_score(threshold, ScoreInputs(source=source, category="gravel"),
                               ScoreParams(batch_size=base.batch_size, knn_backend=knn_backend, device=device),
                               context=Context(artifacts=context.artifacts, force=True))
            _synchronise(device)
            rate = scored.summary["images"] / (time.perf_counter() - start)
            rows.append((f"score ({feature_dtype}, kNN {knn_backend})", f"{rate:.1f} img/s"))
    return rows


def _prompts(n: int, size: int):
    from benchmarks.reason import _prompts as inspection_prompts

    return inspection_prompts(n, size)


def _model(tmp: Path, *, tiny: bool, device: str):
    """A tiny Qwen2.5-VL loaded like a downloaded one, or one of 7B's shape built in memory on ``device``."""
    from eagle_cli.mllm.hf import HFBackend
    from tests.mllm.tiny import build_qwen25_vl

    folder = build_qwen25_vl(tmp / "tiny-qwen")
    if tiny:
        return HFBackend.load(str(folder), device=device, max_new_tokens=8)
    import torch
    from transformers import AutoConfig, AutoProcessor, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    small = AutoConfig.from_pretrained(folder)
    ids = {key: getattr(small, key) for key in ("image_token_id", "video_token_id", "vision_start_token_id",
                                                "vision_end_token_id", "eos_token_id", "pad_token_id")}
    config = Qwen2_5_VLConfig(text_config={**QWEN_7B_TEXT, "eos_token_id": ids["eos_token_id"],
                                           "pad_token_id": ids["pad_token_id"], "bos_token_id": None},
                              vision_config=QWEN_7B_VISION, bos_token_id=None, **ids)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
    return HFBackend(model, AutoProcessor.from_pretrained(folder), name="Qwen2.5-VL-7B-shaped (random weights)",
                     max_new_tokens=16)


def reasoning(tmp: Path, *, tiny: bool, device: str, repeats: int) -> list[tuple[str, str]]:
    from eagle_cli.params import CaasSettings

    backend = _model(tmp, tiny=tiny, device=device)
    label = "tiny Qwen2.5-VL" if tiny else "Qwen2.5-VL-7B shape"
    layers = (1, 2) if tiny else tuple(range(9, 15))
    rows, base = [], {}
    for batch in (1, 4) if tiny else (1, 4, 16):
        prompts = _prompts(batch, 224)
        for name, settings in [("sdpa", None), ("caas renorm", CaasSettings(layers=layers)),
                               ("caas scale", CaasSettings(layers=layers, mode="scale"))]:
            backend.generate(prompts, settings)  # warm-up
            times = []
            for _ in range(repeats):
                _synchronise(device)
                start = time.perf_counter()
                backend.generate(prompts, settings)
                _synchronise(device)
                times.append(time.perf_counter() - start)
            rate = batch / statistics.median(times)
            base.setdefault(batch, rate)
            rows.append((f"{label} batch {batch} {name}",
                         f"{rate:.2f} prompts/s ({rate / base[batch]:.2f}x sdpa)"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny data and model: for any machine and for CI")
    parser.add_argument("--device", default=None, help="default: cuda when there is one, else cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        torch.set_num_threads(2)
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu"
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        rows = expert(tmp / "expert", tiny=args.tiny, device=device)
        rows += reasoning(tmp / "reasoning", tiny=args.tiny, device=device, repeats=args.repeats)
    print(f"eagle on {name} (torch {torch.__version__}{', tiny settings' if args.tiny else ''})")
    for label, figure in rows:
        print(f"  {label:44} {figure}")


if __name__ == "__main__":
    main()
