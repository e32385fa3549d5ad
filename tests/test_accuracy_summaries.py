"""The summaries of benchmarks/accuracy/ behind tables in docs/benchmarks.md, on hand-built reports and summaries."""

import importlib.util
import math
from pathlib import Path


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "benchmarks" /
                                                  "accuracy" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


summary = load_script("subset_sweep_summary")
presence = load_script("presence_split")


def sweep(full: float, a_only: float, b_only: float) -> dict:
    values = {"A+B": full, "A": a_only, "B": b_only}
    return {**{subset: {"1": dice} for subset, dice in values.items()},
            summary.MEAN_KEY: {"mean": sum(values.values()) / 3}}


REPORT = {"repeats": 3, "keys": ["1"], "runs": {"T": [
    {"fold": "0", "repeat": 2, "missing": sweep(0.5, 0.5, 0.1)},
    {"fold": "0", "repeat": 1, "missing": sweep(0.8, 0.4, 0.0)},
    {"fold": "1", "repeat": 1},
]}}


def test_lowest_share_is_over_the_subsets_keeping_a_carrying_modality():
    assert summary.lowest_share(sweep(0.8, 0.4, 0.0), "1", {"A"}) == (0.5, "A")


def test_lowest_share_takes_the_largest_subset_as_full_wherever_it_is_listed():
    assert summary.lowest_share(dict(reversed(sweep(0.8, 0.4, 0.0).items())), "1", {"A"}) == (0.5, "A")


def test_lowest_share_is_nan_without_a_full_modality_dice():
    assert math.isnan(summary.lowest_share(sweep(0.0, 0.0, 0.0), "1", {"A"})[0])


def test_percent_keeps_a_miss_of_the_60_percent_rule_visible():
    assert summary.percent(0.599) == "59.9"


def test_percent_cuts_a_share_just_below_60_percent_instead_of_rounding_it_up():
    assert summary.percent(0.5996) == "59.9"


def test_percent_keeps_a_share_of_exactly_60_percent():
    assert summary.percent(0.6) == "60.0"


def test_percent_is_not_cut_below_a_share_that_binary_floats_store_just_under_it():
    assert summary.percent(0.57) == "57.0"


def test_per_fold_row_lists_the_runs_in_repeat_order_with_a_dash_for_a_missing_sweep():
    assert summary.per_fold_rows(REPORT, {"1": {"A"}})[0] == "| T | 0 | 0.400 / 0.367 / – | 50.0 / 100.0 / – % |"


def test_per_fold_rows_skip_runs_without_a_sweep():
    assert len(summary.per_fold_rows(REPORT, {"1": {"A"}})) == 1


def case(n_ref: int, n_pred: int, dice: float) -> dict:
    return {"metrics": {"2": {"n_ref": n_ref, "n_pred": n_pred, "Dice": dice}}}


CASES = {"metric_per_case": [case(10, 8, 0.8), case(0, 3, 0.0), case(0, 0, float("nan")), case(5, 5, 0.6)]}


def test_per_subset_row_averages_each_key_over_the_swept_runs():
    assert summary.per_subset_rows(REPORT)[1] == "| A | 0.450 |"


def test_presence_split_keeps_the_dice_of_cases_with_the_structure():
    assert presence.split_run(CASES, "2")[0] == [0.8, 0.6]


def test_presence_split_lists_the_voxels_of_each_false_alarm():
    assert presence.split_run(CASES, "2")[1] == [3]


def test_presence_split_counts_the_cases_without_the_structure():
    assert presence.split_run(CASES, "2")[2] == 2


def test_presence_split_of_a_run_without_the_structure_anywhere_is_nan():
    assert math.isnan(presence.mean(presence.split_run({"metric_per_case": [case(0, 0, float("nan"))]}, "2")[0]))
