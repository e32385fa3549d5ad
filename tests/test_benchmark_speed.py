import json
from types import SimpleNamespace

import pytest
import torch
from helpers import DATASET_ID, TINY_PLANS, run_tool

from nnunet_multimodal.benchmarks.speed import BASELINE, METRICS, format_summary, round_orders, summarize
from nnunet_multimodal.benchmarks.speed_worker import forward_gflop_per_patch, predraw_extra_loaders


def _m(trainer, step, inference, memory, round_index=0, gflop=1.0):
    return {"trainer": trainer, "step_seconds": step, "inference_seconds_per_case": inference,
            "peak_memory_mb": memory, "forward_gflop_per_patch": gflop, "round": round_index}


def test_ratios_use_medians_over_rounds():
    measurements = [_m(BASELINE, 1.0, 2.0, 100, 0), _m("A", 1.5, 2.0, 150, 0),
                    _m(BASELINE, 3.0, 2.0, 100, 1), _m("A", 1.5, 6.0, 120, 1),
                    _m(BASELINE, 2.0, 4.0, 110, 2), _m("A", 2.0, 4.0, 130, 2)]
    summary = summarize(measurements)
    assert summary[BASELINE]["step_seconds_ratio"] == 1.0
    assert summary["A"]["step_seconds"] == 1.5
    assert summary["A"]["step_seconds_ratio"] == pytest.approx(0.75)
    assert summary["A"]["inference_seconds_per_case_ratio"] == pytest.approx(2.0)
    assert summary["A"]["peak_memory_mb_ratio"] == pytest.approx(130 / 100)
    assert summary["A"]["rounds"] == 3
    assert "A" in format_summary(summary)


def test_per_round_ratio_range_pairs_each_trainer_with_the_baseline_of_its_round():
    # round ratios of A's step: 1.5/1.0, 1.5/3.0, 2.0/2.0; of its inference: 1.0, 3.0, 1.0
    measurements = [_m(BASELINE, 1.0, 2.0, 100, 0), _m("A", 1.5, 2.0, 150, 0),
                    _m("A", 1.5, 6.0, 120, 1), _m(BASELINE, 3.0, 2.0, 100, 1),
                    _m(BASELINE, 2.0, 4.0, 110, 2), _m("A", 2.0, 4.0, 130, 2)]
    summary = summarize(measurements)
    assert summary["A"]["step_seconds_ratio_range"] == pytest.approx([0.5, 1.5])
    assert summary["A"]["inference_seconds_per_case_ratio_range"] == pytest.approx([1.0, 3.0])
    assert summary[BASELINE]["step_seconds_ratio_range"] == [1.0, 1.0]
    assert "peak_memory_mb_ratio_range" not in summary["A"]
    row = next(line for line in format_summary(summary).splitlines() if line.startswith("A "))
    assert "0.75 (0.50-1.50)" in row
    assert "2.00 (1.00-3.00)" in row


def test_forward_flops_of_a_convolution_on_one_patch():
    convolution = torch.nn.Conv2d(2, 3, 3, padding=1)
    # 3 outputs x 2 inputs x 3 x 3 weights, one multiply and one add each, at 4 x 5 output pixels
    assert forward_gflop_per_patch(convolution, 2, (4, 5), "cpu") == pytest.approx(2 * 3 * 2 * 9 * 20 / 1e9)


def test_attention_flops_are_counted_on_the_cpu():
    class SelfAttention(torch.nn.Module):
        def forward(self, x):  # (batch, heads, tokens, head dim)
            return torch.nn.functional.scaled_dot_product_attention(x, x, x)

    # queries x keys, then weights x values: 2 x (2 heads x 4 x 4 tokens x 8 dims), one multiply and one add each
    assert forward_gflop_per_patch(SelfAttention(), 2, (4, 8), "cpu") == pytest.approx(2 * 2 * (2 * 4 * 4 * 8) / 1e9)


def test_flop_ratio_is_a_column_of_the_table():
    summary = summarize([_m(BASELINE, 1.0, 1.0, 100, gflop=2.0), _m("A", 1.0, 1.0, 100, gflop=5.0)])
    assert summary["A"]["forward_gflop_per_patch_ratio"] == pytest.approx(2.5)
    header, baseline_row, row = format_summary(summary).splitlines()
    assert "GFLOP/patch" in header
    assert baseline_row.split()[-2:] == ["2", "1.00"]
    assert row.split()[-2:] == ["5", "2.50"]


def test_baseline_required():
    with pytest.raises(ValueError, match=BASELINE):
        summarize([_m("A", 1, 1, 1)])


def test_measurements_survive_a_failing_trainer(tmp_path, monkeypatch):
    from argparse import Namespace

    from nnunet_multimodal.benchmarks import speed

    def measure(trainer, args, env, profile):
        if trainer == "Broken":
            raise RuntimeError("measuring Broken failed")
        return _m(trainer, 1.0, 1.0, 1.0)

    monkeypatch.setattr(speed, "_measure_in_subprocess", measure)
    monkeypatch.setattr(speed, "dataset_folder", lambda dataset, variable: tmp_path)
    (tmp_path / "P.json").write_text(json.dumps({"configurations": {"2d": {"architecture": {}}}}))
    report_file = tmp_path / "speed.json"
    args = Namespace(d="1", c="2d", p="P", tr=["A", "Broken"], device="cpu", steps=1, warmup=0, rounds=1,
                     cases=1, json=str(report_file), profile=None)
    with pytest.raises(RuntimeError, match="Broken"):
        speed.run_speed_benchmark(args)
    report = json.loads(report_file.read_text())
    assert not report["complete"]
    assert [m["trainer"] for m in report["measurements"]] == [BASELINE, "A"]


def test_rounds_alternate_order():
    assert round_orders(["A", "B"], 3) == [[BASELINE, "A", "B"], ["B", "A", BASELINE], [BASELINE, "A", "B"]]


def test_harness_on_tiny_plans(workspace, phantom_dataset, tmp_path):
    report_file = tmp_path / "speed.json"
    result = run_tool(["nnunet-mm", "benchmark", "speed", "-d", DATASET_ID, "-c", "2d", "-p", TINY_PLANS, "-tr",
                       "nnUNetTrainerMultiModalBase", "--rounds", "1", "--steps", "2", "--warmup", "1", "--cases",
                       "1", "--json", report_file, "--profile", tmp_path / "profiles"], workspace.env)
    report = json.loads(report_file.read_text())
    assert report["schema_version"] == 1
    assert report["baseline"] == BASELINE
    assert report["complete"]
    assert {m["trainer"] for m in report["measurements"]} == {BASELINE, "nnUNetTrainerMultiModalBase"}
    for summary in report["summary"].values():
        for metric in METRICS:
            assert summary[metric] > 0
            assert summary[f"{metric}_ratio"] > 0
    assert report["summary"][BASELINE]["step_seconds_ratio"] == 1.0
    assert [m["round"] for m in report["measurements"]] == [0, 0]
    assert "nnUNetTrainerMultiModalBase" in result.stdout
    assert not list(workspace.results.rglob("nnUNetTrainer__*")), "benchmark wrote into nnUNet_results"
    assert sorted(p.name for p in (tmp_path / "profiles").iterdir()) == sorted(
        f"{t}_{kind}.txt" for t in (BASELINE, "nnUNetTrainerMultiModalBase") for kind in ("step", "tile"))
    assert report["measurements"][0]["profile"]["step"]["busy_ms_per_pass"] > 0


def test_loaders_drawn_inside_the_step_are_drawn_before_timing():
    draws = []

    def counting(name):
        while True:
            draws.append(name)
            yield name

    trainer = SimpleNamespace(dataloader_train=counting("train"), dataloader_val=counting("val"),
                              dataloader_assistant=counting("assistant"), dataloader_unused=None)
    originals = predraw_extra_loaders(trainer, 3)
    assert set(originals) == {"dataloader_assistant"}
    assert draws == ["assistant"] * 3
    assert [next(trainer.dataloader_assistant) for _ in range(3)] == ["assistant"] * 3
    assert draws == ["assistant"] * 3  # the step's draws no longer load anything
    assert trainer.dataloader_unused is None
