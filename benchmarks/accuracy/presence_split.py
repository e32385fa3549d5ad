"""Split one label's (or region's) Dice in an `nnunet-mm benchmark accuracy` report into segmentation and false
alarms. nnU-Net's Dice counts a case whose reference lacks the structure as 0 when the prediction has any of it: a
few stray voxels in one such case can move a run's mean as much as a worse segmentation of every case. Per trainer,
over the report's runs (their evaluations: OUT/predictions/TRAINER/repeat_R/fold_F/summary_nnunet_mm.json, OUT the
report's folder): the mean Dice over the cases whose reference has the structure (per fold), and how many cases
without it got a prediction, with their predicted voxels. Prints a Markdown table.

    python benchmarks/accuracy/presence_split.py OUT/accuracy_NAME.json KEY   (KEY: e.g. 2 or "(1, 3)")
"""

import json
import math
import statistics
import sys
from pathlib import Path


def split_run(summary: dict, key: str) -> tuple[list[float], list[int], int]:
    """(Dice of the cases with the structure, predicted voxels of each false alarm, cases without the structure)."""
    dice, false_alarms, absent = [], [], 0
    for case in summary["metric_per_case"]:
        if key not in case["metrics"]:
            sys.exit(f"no {key!r} in the evaluation; its keys: {', '.join(map(repr, case['metrics']))}")
        metrics = case["metrics"][key]
        if metrics["n_ref"] > 0:
            dice.append(metrics["Dice"])
        else:
            absent += 1
            if metrics["n_pred"] > 0:
                false_alarms.append(metrics["n_pred"])
    return dice, false_alarms, absent


def mean(values: list[float]) -> float:
    return statistics.mean(values) if values else math.nan


def main(report_file: str, key: str) -> None:
    report_path = Path(report_file)
    report = json.loads(report_path.read_text())
    print(f"| trainer | Dice {key}, cases with it: mean over runs (per fold) | cases without it given a prediction "
          "| their predicted voxels |")
    print("|---|---|---|---|")
    for trainer, runs in report["runs"].items():
        by_fold: dict[str, list[float]] = {}
        false_alarms, absent = [], 0
        for run in runs:
            summary = (report_path.parent / "predictions" / trainer / f"repeat_{run['repeat']}" /
                       f"fold_{run['fold']}" / "summary_nnunet_mm.json")
            if not summary.is_file():
                sys.exit(f"{summary} is missing: run the benchmark's command again to predict and evaluate it")
            dice, alarms, run_absent = split_run(json.loads(summary.read_text()), key)
            by_fold.setdefault(run["fold"], []).append(mean(dice))
            false_alarms += alarms
            absent += run_absent
        runs_dice = [value for values in by_fold.values() for value in values]
        per_fold = " / ".join(f"{mean(values):.3f}" for values in by_fold.values())
        print(f"| `{trainer}` | {mean(runs_dice):.3f} over {len(runs_dice)} runs (folds {', '.join(by_fold)}: "
              f"{per_fold}) | {len(false_alarms)} of {absent} | {', '.join(map(str, false_alarms)) or '–'} |")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
