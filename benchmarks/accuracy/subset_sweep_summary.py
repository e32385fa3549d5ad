"""Per run of an `nnunet-mm benchmark accuracy --missing-sweep` report: the mean over all modality subsets, and the
lowest share of the run's own full-modality Dice over the subsets that keep a modality carrying each region (the
60 % rule of docs/benchmarks.md). Prints a Markdown table, one row per trainer and run, or with --per-fold one row
per trainer and fold, the fold's runs side by side in repeat order (the sweep tables of docs/benchmarks.md), or with
--per-subset one row per subset: each trainer's Dice of every label or region, mean over its swept runs.

    python benchmarks/accuracy/subset_sweep_summary.py REPORT_JSON [--per-fold | --per-subset]
                                                       [--carry KEY=MODALITY,MODALITY ...]

--carry defaults to the BraTS-like phantom's: whole tumour (labels 1, 2, 3) seen in T2 and FLAIR, tumour core
(1, 3) and enhancing tumour (3) in T1c.
"""

import argparse
import json
import math
import statistics
from pathlib import Path

MEAN_KEY = "mean over subsets"
BRATS_CARRY = ["(1, 2, 3)=T2,FLAIR", "(1, 3)=T1c", "(3,)=T1c"]


def carrying(pairs: list[str]) -> dict[str, set[str]]:
    return {key: set(modalities.split(",")) for key, modalities in (pair.split("=", 1) for pair in pairs)}


def lowest_share(sweep: dict, key: str, modalities: set[str]) -> tuple[float, str]:
    """(lowest Dice share of the full-modality Dice, its subset) over the subsets keeping one of ``modalities``; NaN
    when the run found nothing of ``key`` with every modality (no share to take)."""
    subsets = [s for s in sweep if s != MEAN_KEY]
    full = sweep[max(subsets, key=lambda subset: len(subset.split("+")))][key]
    if not full > 0:
        return math.nan, "-"
    return min((sweep[s][key] / full, s) for s in subsets if set(s.split("+")) & modalities)


def percent(share: float) -> str:
    """Cut, not rounded, to one decimal, so that a share below 60 % never prints as a 60.0 % that meets the rule
    (the rounding to 9 places only absorbs the binary representation, as of 0.57 * 1000)."""
    return "–" if math.isnan(share) else f"{math.floor(round(1000 * share, 9)) / 10:.1f}"


def per_fold_rows(report: dict, carry: dict[str, set[str]]) -> list[str]:
    """One Markdown row per trainer and fold with a sweep: the subset mean and the lowest shares of each training,
    repeats 1, 2, ... joined by " / " ("–" for a training without a sweep, so the columns keep their repeat)."""
    rows = []
    for trainer, runs in report["runs"].items():
        folds: dict[str, dict[int, dict]] = {}
        for run in runs:
            if run.get("missing"):
                folds.setdefault(run["fold"], {})[run["repeat"]] = run["missing"]
        for fold, by_repeat in folds.items():
            sweeps = [by_repeat.get(repeat) for repeat in range(1, report["repeats"] + 1)]
            means = " / ".join(f"{sweep[MEAN_KEY]['mean']:.3f}" if sweep else "–" for sweep in sweeps)
            shares = [" / ".join(percent(lowest_share(sweep, key, modalities)[0]) if sweep else "–"
                                 for sweep in sweeps) + " %" for key, modalities in carry.items()]
            rows.append(f"| {trainer} | {fold} | {means} | " + " | ".join(shares) + " |")
    return rows


def per_subset_rows(report: dict) -> list[str]:
    """One Markdown row per subset: per trainer, the mean over its swept runs of each key, joined by " / "."""
    sweeps = {trainer: [run["missing"] for run in runs if run.get("missing")]
              for trainer, runs in report["runs"].items()}
    sweeps = {trainer: swept for trainer, swept in sweeps.items() if swept}
    subsets = [subset for subset in next(iter(sweeps.values()))[0] if subset != MEAN_KEY]
    return [f"| {subset} | " + " | ".join(
        " / ".join(f"{statistics.mean(run[subset][key] for run in runs):.3f}" for key in report["keys"])
        for runs in sweeps.values()) + " |" for subset in subsets]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", type=Path)
    parser.add_argument("--carry", nargs="+", default=BRATS_CARRY)
    view = parser.add_mutually_exclusive_group()
    view.add_argument("--per-fold", action="store_true", help="one row per trainer and fold")
    view.add_argument("--per-subset", action="store_true", help="one row per subset, every label or region")
    args = parser.parse_args()
    report = json.loads(args.report.read_text())
    carry = carrying(args.carry)
    names = report["names"]
    if args.per_subset:
        trainers = [trainer for trainer, runs in report["runs"].items() if any(run.get("missing") for run in runs)]
        print(f"| modalities ({' / '.join(names.get(key, key) for key in report['keys'])}) | "
              + " | ".join(trainers) + " |")
        print("|---" * (1 + len(trainers)) + "|")
        print("\n".join(per_subset_rows(report)))
        return
    if args.per_fold:
        print("| trainer | fold | mean over subsets, per run | " + " | ".join(
            f"lowest {names.get(key, key)} share, per run" for key in carry) + " |")
        print("|---" * (3 + len(carry)) + "|")
        print("\n".join(per_fold_rows(report, carry)))
        return
    print("| trainer | fold | repeat | mean over subsets | " + " | ".join(
        f"lowest {names.get(key, key)} share (subset)" for key in carry) + " |")
    print("|---" * (4 + len(carry)) + "|")
    for trainer, runs in report["runs"].items():
        for run in runs:
            sweep = run.get("missing")
            if not sweep:
                continue
            shares = [lowest_share(sweep, key, modalities) for key, modalities in carry.items()]
            print(f"| {trainer} | {run['fold']} | {run['repeat']} | {sweep[MEAN_KEY]['mean']:.3f} | "
                  + " | ".join(f"{percent(share)} % ({subset})" for share, subset in shares) + " |")


if __name__ == "__main__":
    main()
