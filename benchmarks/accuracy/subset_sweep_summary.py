"""Per run of an `nnunet-mm benchmark accuracy --missing-sweep` report: the mean over all modality subsets, and the
lowest share of the run's own full-modality Dice over the subsets that keep a modality carrying each region (the
60 % rule of docs/benchmarks.md). Prints a Markdown table, one row per trainer and run, or with --per-fold one row
per trainer and fold, the fold's runs side by side in repeat order (the tables of docs/benchmarks.md).

    python benchmarks/accuracy/subset_sweep_summary.py REPORT_JSON [--per-fold] [--carry KEY=MODALITY,MODALITY ...]

--carry defaults to the BraTS-like phantom's: whole tumour (labels 1, 2, 3) seen in T2 and FLAIR, tumour core
(1, 3) and enhancing tumour (3) in T1c.
"""

import argparse
import json
from pathlib import Path

MEAN_KEY = "mean over subsets"
BRATS_CARRY = ["(1, 2, 3)=T2,FLAIR", "(1, 3)=T1c", "(3,)=T1c"]


def carrying(pairs: list[str]) -> dict[str, set[str]]:
    return {key: set(modalities.split(",")) for key, modalities in (pair.split("=", 1) for pair in pairs)}


def lowest_share(sweep: dict, key: str, modalities: set[str]) -> tuple[float, str]:
    """(lowest Dice share of the full-modality Dice, its subset) over the subsets keeping one of ``modalities``."""
    subsets = [s for s in sweep if s != MEAN_KEY]
    full = sweep[subsets[0]][key]  # the sweep lists the full set first
    return min((sweep[s][key] / full, s) for s in subsets if set(s.split("+")) & modalities)


def per_fold_rows(report: dict, carry: dict[str, set[str]]) -> list[str]:
    """One Markdown row per trainer and fold: the subset means and the lowest shares of the fold's swept runs, in
    repeat order, joined by " / "."""
    rows = []
    for trainer, runs in report["runs"].items():
        folds: dict[str, list[dict]] = {}
        for run in sorted((run for run in runs if run.get("missing")), key=lambda run: run["repeat"]):
            folds.setdefault(run["fold"], []).append(run["missing"])
        for fold, sweeps in folds.items():
            means = " / ".join(f"{sweep[MEAN_KEY]['mean']:.3f}" for sweep in sweeps)
            shares = [" / ".join(f"{100 * lowest_share(sweep, key, modalities)[0]:.0f}" for sweep in sweeps) + " %"
                      for key, modalities in carry.items()]
            rows.append(f"| {trainer} | {fold} | {means} | " + " | ".join(shares) + " |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", type=Path)
    parser.add_argument("--carry", nargs="+", default=BRATS_CARRY)
    parser.add_argument("--per-fold", action="store_true", help="one row per trainer and fold")
    args = parser.parse_args()
    report = json.loads(args.report.read_text())
    carry = carrying(args.carry)
    names = report["names"]
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
                  + " | ".join(f"{100 * share:.1f} % ({subset})" for share, subset in shares) + " |")


if __name__ == "__main__":
    main()
