"""Seed spread against fold spread in an `nnunet-mm benchmark accuracy` report trained with --repeats > 1.

Per trainer and region: mean ± sd over all runs, the sd over one fold's independent trainings (mean over folds), the
sd of the fold means, and each fold mean's difference to the first trainer's. Prints a Markdown table.

    python benchmarks/accuracy/seed_and_fold_spread.py OUT/accuracy_NAME.json
"""

import json
import statistics
import sys
from pathlib import Path


def value(run: dict, key: str) -> float:
    return run["mean_dice"] if key == "mean" else run["dice"][key]


def fold_means(runs: list[dict], key: str, folds: list[str]) -> list[float]:
    return [statistics.mean(value(run, key) for run in runs if run["fold"] == fold) for fold in folds]


def main(report_file: str) -> None:
    report = json.loads(Path(report_file).read_text())
    if report["repeats"] < 2:
        sys.exit(f"{report_file} has one training per fold: a seed spread needs --repeats 2 or more")
    folds, baseline = report["folds"], report["baseline"]
    keys = report["keys"] + ["mean"]
    names = dict(report["names"], mean="mean")
    print("| trainer | region | mean ± sd over runs | sd over a fold's trainings (mean over folds) "
          f"| sd of the fold means | fold mean − {baseline}'s, fold {' / '.join(folds)} |")
    print("|---|---|---|---|---|---|")
    for trainer, runs in report["runs"].items():
        for key in keys:
            values = [value(run, key) for run in runs]
            within = statistics.mean(statistics.stdev([value(run, key) for run in runs if run["fold"] == fold])
                                     for fold in folds)
            means = fold_means(runs, key, folds)
            base = fold_means(report["runs"][baseline], key, folds)
            differences = "–" if trainer == baseline else " / ".join(f"{a - b:+.3f}" for a, b in zip(means, base))
            print(f"| {trainer} | {names[key]} | {statistics.mean(values):.3f} ± {statistics.stdev(values):.3f} "
                  f"({len(values)}) | {within:.3f} | {statistics.stdev(means):.3f} | {differences} |")


if __name__ == "__main__":
    main(sys.argv[1])
