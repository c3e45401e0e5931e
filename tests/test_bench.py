"""The benchmark scripts run on CPU and write complete JSON (their numbers are reported, not asserted)."""
import json

import pytest

from bench import data_pipeline, engine_overhead, gpu_throughput


def test_engine_overhead_reports_both_loops(tmp_path):
    result = engine_overhead.main(["--steps", "2", "--repeats", "1", "--image-size", "32",
                                   "--out", str(tmp_path / "e.json")])
    saved = json.loads((tmp_path / "e.json").read_text())
    assert saved["engine_steps_per_s"] > 0 and saved["bare_steps_per_s"] > 0
    assert saved["ratio"] == pytest.approx(result["engine_steps_per_s"] / result["bare_steps_per_s"])
    assert saved["no_ema_ratio"] == pytest.approx(saved["engine_no_ema_steps_per_s"] / saved["bare_steps_per_s"])
    assert len(saved["engine_times"]) == len(saved["engine_no_ema_times"]) == len(saved["bare_times"]) == 1
    assert "machine" in saved and "| shared Engine |" in saved["table"] and "EMA off" in saved["table"]


def test_data_pipeline_compares_raw_memmap_and_arrow(tmp_path):
    data_pipeline.main(["--images", "8", "--source-size", "128", "--image-size", "32", "--batch-size", "4",
                        "--workers", "0", "--repeats", "1", "--skip-3d", "--out", str(tmp_path / "d.json")])
    saved = json.loads((tmp_path / "d.json").read_text())
    row = saved["2d"][0]
    assert row["workers"] == 0
    assert min(row["raw_png"], row["memmap_cache"], row["arrow_cache"]) > 0
    assert row["cache_vs_raw"] == pytest.approx(row["memmap_cache"] / row["raw_png"])


def test_gpu_throughput_counts_flops_and_compares_recipes(tmp_path):
    result = gpu_throughput.main(["--small", "--steps", "1", "--warmup", "0", "--sizes", "32",
                                  "--recipes", "a_source", "b_default", "--out", str(tmp_path / "g.json")])
    rows = result["results"]
    assert [r["recipe"] for r in rows] == ["a_source", "b_default"]
    assert all(r["gflops_per_step"] > 0 and r["images_per_s"] > 0 and r["fraction_of_peak"] > 0 for r in rows)
    assert rows[0]["speedup_vs_first"] == 1.0
    assert json.loads((tmp_path / "g.json").read_text())["matmul_peak_tflops"] == pytest.approx(result["matmul_peak_tflops"])
