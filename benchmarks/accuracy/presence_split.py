"""Split one label's (or region's) Dice in an `nnunet-mm benchmark accuracy` output folder into segmentation and
false alarms. nnU-Net's Dice counts a case whose reference lacks the structure when the prediction has any of it,
as 0: a few stray voxels in one such case can move a run's mean as much as a worse segmentation of every case.
Per trainer, over all its runs (OUT/predictions/TRAINER/repeat_R/fold_F/summary_nnunet_mm.json): the mean Dice over
the cases whose reference has the structure (per fold), and how many cases without it got a prediction, with their
predicted voxels. Prints a Markdown table.

    python benchmarks/accuracy/presence_split.py OUT KEY    (KEY: the evaluation's key, e.g. 2 or "(1, 3)")
"""

import json
import statistics
import sys
from pathlib import Path


def split_run(summary: dict, key: str) -> tuple[list[float], list[int], int]:
    """(Dice of the cases with the structure, predicted voxels of each false alarm, cases without the structure)."""
    dice, false_alarms, absent = [], [], 0
    for case in summary["metric_per_case"]:
        metrics = case["metrics"][key]
        if metrics["n_ref"] > 0:
            dice.append(metrics["Dice"])
        else:
            absent += 1
            if metrics["n_pred"] > 0:
                false_alarms.append(metrics["n_pred"])
    return dice, false_alarms, absent


def main(out: str, key: str) -> None:
    predictions = Path(out) / "predictions"
    print(f"| trainer | Dice {key}, cases with it (mean over runs; per fold) | cases without it given a prediction "
          "| their predicted voxels |")
    print("|---|---|---|---|")
    for trainer in sorted(path.name for path in predictions.iterdir() if path.is_dir()):
        by_fold: dict[str, list[float]] = {}
        false_alarms, absent = [], 0
        for summary_file in sorted(predictions.glob(f"{trainer}/repeat_*/fold_*/summary_nnunet_mm.json")):
            dice, alarms, run_absent = split_run(json.loads(summary_file.read_text()), key)
            by_fold.setdefault(summary_file.parent.name.removeprefix("fold_"), []).append(statistics.mean(dice))
            false_alarms += alarms
            absent += run_absent
        runs = [value for values in by_fold.values() for value in values]
        per_fold = " / ".join(f"{fold} {statistics.mean(values):.3f}" for fold, values in sorted(by_fold.items()))
        print(f"| `{trainer}` | {statistics.mean(runs):.3f} over {len(runs)} runs ({per_fold}) | "
              f"{len(false_alarms)} of {absent} | {', '.join(map(str, false_alarms)) or '–'} |")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
