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


def _run(*args):
    out = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_fit_scale_benchmark_measures_every_stage_and_both_selections():
    table = _run("benchmarks.fit_scale", "--images", "6", "--backbone", "mobilenet_v2", "--lists", "--target-far",
                 "0.2")
    for label in ("| extract |", "| fit-bank, greedy |", "| fit-bank, updates by lists |", "| fit-threshold |"):
        assert label in table
    assert "baseline process" in table


def test_coreset_benchmark_compares_the_faster_selection_with_the_greedy(tmp_path):
    rows = tmp_path / "rows.jsonl"
    table = _run("benchmarks.coreset", "--train", "8", "--seeds", "0", "--categories", "brick",
                 "--test-good", "4", "--test-per-defect", "1", "--bank-seeds", "0,1", "--json", str(rows))
    assert "| brick |" in table and "radius lists / greedy" in table and "lists: mean Δ AUROC" in table
    # A second run's rows (other bank seeds) pool with the first's in one table.
    pooled = _run("benchmarks.coreset", "--summarise", str(rows), str(rows))
    assert "2 bank seeds per row" in pooled and pooled.count("| brick |") == 1


def test_grow_benchmark_compares_update_bank_with_a_full_refit():
    table = _run("benchmarks.grow", "--train", "8", "--added", "2", "--seeds", "0", "--categories", "brick",
                 "--test-good", "4", "--test-per-defect", "1")
    assert "| brick | 0 |" in table and "worst time ratio" in table


def test_ablation_benchmark_tabulates_every_feature_layout_and_image_score():
    table = _run("benchmarks.ablation", "--train", "8", "--seeds", "0", "--categories", "brick", "--test-good", "4",
                 "--test-per-defect", "1", "--size", "224")
    for label in ("| reference max |", "| native k9 |", "| native reweight |", "| reference top1% |", "| native |",
                  "| native k-center max |", "| native w3 top1% |", "| layers 6+13+16 max |"):
        assert label in table


def test_image_identity_benchmark_prints_every_digest_against_extraction():
    table = _run("benchmarks.image_identity", "--images", "4", "--size", "256", "--extract", "2")
    for label in ("stat only (0.3)", "content, empty cache", "content, warm cache", "content, all touched"):
        assert label in table
    assert "× extract" in table


def test_runtime_benchmark_compares_the_export_with_the_torch_path():
    table = _run("benchmarks.runtime", "--backbones", "mobilenet_v2", "--runtimes", "onnx", "--rss-images", "30")
    assert "| mobilenet_v2 | torch |" in table and "| mobilenet_v2 | onnx |" in table
    assert "| onnx | 30 |" in table


def test_allocator_benchmark_compares_glibcs_defaults_with_eagles_setting():
    table = _run("benchmarks.allocator", "--tiles", "2", "--side", "64", "--repeats", "2")
    assert "| default |" in table and "| tuned |" in table and "× the time per forward" in table


def test_tiled_cost_benchmark_measures_every_stage_in_its_own_process():
    # 19 images × 7,056 patches: a 1 % bank would have 1,340 entries, so the limit of 1,000 binds.
    table = _run("benchmarks.tiled_cost", "--sizes", "512", "--train", "19", "--test", "1", "--coreset-max", "1000")
    row = next(line for line in table.splitlines() if line.startswith("| 512 |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1:5] == ["1000", "9", str(9 * 28 * 28), "1000"]  # 9 tiles of 224 over 512 px, 784 patches each
    seconds = [float(s) for s in cells[9].split(",")]  # a scored image: fresh process, warm, each added image
    assert len(seconds) == 3 and all(s > 0 for s in seconds)
    assert float(cells[8]) > 0  # each added image against its tiles one at a time
    peaks = [float(mb) for mb in cells[-2].split(" / ")]
    libraries = float(cells[-1])  # what a stage's process held before it began
    assert len(peaks) == 4 and all(peak > libraries > 0 for peak in peaks)


def test_exact_search_benchmark_compares_the_calibrations_search_with_its_alternatives():
    table = _run("benchmarks.exact_search", "--size", "512", "--train", "4", "--images", "1")
    rows = {line.split("|")[1].split(":")[0].strip(): [cell.strip() for cell in line.strip("|").split("|")]
            for line in table.splitlines() if line.startswith(("| leave-own-out", "| listed", "| filtered"))}
    assert set(rows) == {"leave-own-out", "listed", "filtered"}
    assert rows["leave-own-out"][2] == "1.00" and all(float(row[1]) > 0 for row in rows.values())
    # The nearest entry of another image is the same however it is found; what the filter proves, it proves right.
    assert rows["listed"][4] == "1.0000" and rows["filtered"][4] == "1.0000"
    assert 0 < float(rows["filtered"][3]) <= 1
    settled = {line.split("|")[1].split(":")[0].strip(): float(line.strip("|").split("|")[1])
               for line in table.splitlines() if line.startswith("| by ")}
    assert set(settled) == {"by list", "by cover", "by every entry"}
    # Candidates settle an orphan only where some entry does: no list settles more than every entry.
    assert all(0 < share <= settled["by every entry"] for share in settled.values())


def test_batch_norm_fold_benchmark_times_both_extractors_and_their_difference():
    table = _run("benchmarks.batch_norm_fold", "--backbones", "resnet18", "--tiles", "1", "--rounds", "1",
                 "--repeats", "1")
    row = next(line for line in table.splitlines() if line.startswith("| resnet18 |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert float(cells[2]) > 0 and float(cells[3]) > 0
    assert float(cells[5].split()[0]) < 1e-3  # the same features to float rounding


def test_peak_bounds_benchmark_bounds_each_calibration_images_peak(tmp_path):
    from benchmarks.highres import stages
    from benchmarks.tiled_cost import EXTRACT
    from eagle_cli.context import Context
    from eagle_cli.data import DataSource
    from eagle_cli.data.synthetic import generate

    # 19 training images: the fewest that support the default 5 % false-alarm target.
    generate(tmp_path / "data", categories=("brick",), variation="highres", n_train=19, n_test_good=1,
             n_test_per_defect=0, size=512, seed=0)
    made, context = {}, Context(artifacts=tmp_path / "artifacts")
    for name, stage in list(stages(DataSource(root=tmp_path / "data"), "brick", EXTRACT).items())[:3]:
        made[name] = stage(made, context)
    table = _run("benchmarks.peak_bounds", "--threshold", str(made["fit-threshold"].path), "--images", "0,2",
                 "--dims", "16")
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()
            if line.startswith(("| 0 |", "| 2 |"))]
    assert len(rows) == 2
    for row in rows:
        peak, (low, floor), high = float(row[3]), map(float, row[4].split(",")), float(row[5])
        assert low <= floor <= peak <= high and row[6] == "True"  # measuring patches only raises the lower bound
        assert 0 < float(row[7]) <= 1


def test_bounded_calibration_benchmark_finds_the_peaks_of_every_patch_for_fewer_searches():
    table = _run("benchmarks.bounded_calibration", "--size", "512", "--train", "19", "--rounds", "1")
    rows = {cells[1]: cells for cells in ([c.strip() for c in line.strip("|").split("|")]
                                          for line in table.splitlines() if line.startswith("| 1 |"))}
    assert set(rows) == {"every patch", "bounded"}
    assert float(rows["bounded"][4]) < 1e-4  # the same peaks, to float rounding
    assert float(rows["every patch"][5]) == 1.0 and 0 < float(rows["bounded"][5]) < 0.5


def test_score_loop_benchmark_times_the_map_and_the_search_pieces_against_the_baseline():
    table = _run("benchmarks.score_loop", "--size", "256", "--images", "1", "--rounds", "1", "--bank-rows", "100")
    for label in ("| forward + search (baseline) |", "| + map, products on one thread (eagle) |",
                  "| + map, numpy's default threads |", "| + map, searched 8,192 patches at a time |"):
        assert label in table
    assert "4 tiles of 224" in table
