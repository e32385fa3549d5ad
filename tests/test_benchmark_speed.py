import json

import pytest
from conftest import DATASET_ID, TINY_PLANS, run_tool

from nnunet_multimodal.benchmarks.speed import BASELINE, METRICS, format_summary, round_orders, summarize


def _m(trainer, step, inference, memory):
    return {"trainer": trainer, "step_seconds": step, "inference_seconds_per_case": inference,
            "peak_memory_mb": memory}


def test_ratios_use_medians_over_rounds():
    measurements = [_m(BASELINE, 1.0, 2.0, 100), _m("A", 1.5, 2.0, 150),
                    _m(BASELINE, 3.0, 2.0, 100), _m("A", 1.5, 6.0, 120),
                    _m(BASELINE, 2.0, 4.0, 110), _m("A", 2.0, 4.0, 130)]
    summary = summarize(measurements)
    assert summary[BASELINE]["step_seconds_ratio"] == 1.0
    assert summary["A"]["step_seconds"] == 1.5 and summary["A"]["step_seconds_ratio"] == pytest.approx(0.75)
    assert summary["A"]["inference_seconds_per_case_ratio"] == pytest.approx(2.0)
    assert summary["A"]["peak_memory_mb_ratio"] == pytest.approx(130 / 100)
    assert summary["A"]["rounds"] == 3
    assert "A" in format_summary(summary)


def test_baseline_required():
    with pytest.raises(ValueError, match=BASELINE):
        summarize([_m("A", 1, 1, 1)])


def test_rounds_alternate_order():
    assert round_orders(["A", "B"], 3) == [[BASELINE, "A", "B"], ["B", "A", BASELINE], [BASELINE, "A", "B"]]


def test_harness_on_tiny_plans(workspace, phantom_dataset, tmp_path):
    report_file = tmp_path / "speed.json"
    result = run_tool(["nnunet-mm", "benchmark", "speed", "-d", DATASET_ID, "-c", "2d", "-p", TINY_PLANS, "-tr",
                       "nnUNetTrainerMultiModalBase", "--rounds", "1", "--steps", "2", "--warmup", "1", "--cases",
                       "1", "--json", report_file], workspace.env)
    report = json.loads(report_file.read_text())
    assert report["schema_version"] == 1 and report["baseline"] == BASELINE
    assert {m["trainer"] for m in report["measurements"]} == {BASELINE, "nnUNetTrainerMultiModalBase"}
    for summary in report["summary"].values():
        for metric in METRICS:
            assert summary[metric] > 0 and summary[f"{metric}_ratio"] > 0
    assert report["summary"][BASELINE]["step_seconds_ratio"] == 1.0
    assert "nnUNetTrainerMultiModalBase" in result.stdout
    assert not list(workspace.results.rglob("nnUNetTrainer__*")), "benchmark wrote into nnUNet_results"
