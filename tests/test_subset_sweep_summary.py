"""benchmarks/accuracy/subset_sweep_summary.py on a hand-built report: the per-fold rows of docs/benchmarks.md."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "accuracy" / "subset_sweep_summary.py"
spec = importlib.util.spec_from_file_location("subset_sweep_summary", SCRIPT)
summary = importlib.util.module_from_spec(spec)
spec.loader.exec_module(summary)


def sweep(full: float, a_only: float, b_only: float) -> dict:
    values = {"A+B": full, "A": a_only, "B": b_only}
    return {**{subset: {"1": dice} for subset, dice in values.items()},
            summary.MEAN_KEY: {"mean": sum(values.values()) / 3}}


REPORT = {"runs": {"T": [
    {"fold": "0", "repeat": 2, "missing": sweep(0.5, 0.5, 0.1)},
    {"fold": "0", "repeat": 1, "missing": sweep(0.8, 0.4, 0.0)},
    {"fold": "1", "repeat": 1},
]}}


def test_lowest_share_is_over_the_subsets_keeping_a_carrying_modality():
    assert summary.lowest_share(sweep(0.8, 0.4, 0.0), "1", {"A"}) == (0.5, "A")


def test_per_fold_row_lists_the_runs_in_repeat_order():
    assert summary.per_fold_rows(REPORT, {"1": {"A"}})[0] == "| T | 0 | 0.400 / 0.367 | 50 / 100 % |"


def test_per_fold_rows_skip_runs_without_a_sweep():
    assert len(summary.per_fold_rows(REPORT, {"1": {"A"}})) == 1
