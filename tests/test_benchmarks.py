"""The GPU benchmark runs end to end on a CPU with tiny settings, so it cannot rot unseen."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_gpu_benchmark_prints_its_table_with_tiny_settings():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--tiny", "--device", "cpu",
                          "--repeats", "1"], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    table = out.stdout
    for label in ("extract (float16 stored)", "score (float32, kNN torch)", "score (float32, kNN faiss)",
                  "batch 4 caas renorm", "batch 4 caas scale"):
        assert label in table
    assert "img/s" in table and "prompts/s" in table
