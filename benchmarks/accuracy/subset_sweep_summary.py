"""Per run of an `nnunet-mm benchmark accuracy --missing-sweep` report: the mean over all modality subsets, and the
lowest share of the run's own full-modality Dice over the subsets that keep a modality carrying each region (the
60 % rule of docs/benchmarks.md). Prints a Markdown table, one row per trainer and run.

    python benchmarks/accuracy/subset_sweep_summary.py REPORT_JSON [--carry KEY=MODALITY,MODALITY ...]

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", type=Path)
    parser.add_argument("--carry", nargs="+", default=BRATS_CARRY)
    args = parser.parse_args()
    report = json.loads(args.report.read_text())
    carry = carrying(args.carry)
    names = report["names"]
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
