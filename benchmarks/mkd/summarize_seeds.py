"""Table of benchmarks/mkd/run_seeds.sh: target Dice per class (mean, sd and range over seeds) per setting, and
whether each MKD setting beat both target-only baselines (nnU-Net's batch and MKD's target share of it) on every
class in every seed; other target-only controls are listed without a verdict. Usage:
python benchmarks/mkd/summarize_seeds.py WORKDIR [--json OUT]"""

import argparse
import json
import statistics
from pathlib import Path

CLASSES = {"1": "organ", "2": "lesion", "3": "cyst"}
BASELINES = ("Pair_targetOnly", "Pair_targetOnlyHalfBatch")


def dice_by_setting(workdir: Path) -> dict[str, dict[str, dict[str, float]]]:
    """{setting: {seed: {class: Dice}}} from every summary_nnunet_mm.json under WORKDIR/seed*/."""
    table: dict = {}
    for summary in sorted(workdir.glob("seed*/*/summary_nnunet_mm.json")):
        means = json.loads(summary.read_text())["mean"]
        seed, setting = summary.parent.parent.name, summary.parent.name
        table.setdefault(setting, {})[seed] = {name: means[label]["Dice"] for label, name in CLASSES.items()}
    return table


def beats_baselines(table: dict, setting: str) -> bool:
    seeds = table[setting]
    return all(seeds[seed][c] >= table[b][seed][c] for seed in seeds for b in BASELINES if seed in table.get(b, {})
               for c in CLASSES.values())


def markdown(table: dict) -> str:
    lines = ["| setting | seeds | " + " | ".join(f"{c} mean ± sd (min–max)" for c in CLASSES.values())
             + " | ≥ both baselines, every class and seed |", "|---" * (len(CLASSES) + 3) + "|"]
    for setting, seeds in table.items():
        cells = []
        for c in CLASSES.values():
            values = [seeds[s][c] for s in seeds]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.3f} ± {sd:.3f} ({min(values):.3f}–{max(values):.3f})")
        is_target_only = setting.startswith("Pair_targetOnly")
        verdict = "–" if is_target_only else ("yes" if beats_baselines(table, setting) else "no")
        lines.append(f"| `{setting}` | {len(seeds)} | " + " | ".join(cells) + f" | {verdict} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--json", type=Path, help="also write the per-seed Dice here")
    args = parser.parse_args()
    table = dice_by_setting(args.workdir)
    print(markdown(table))
    if args.json:
        args.json.write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
