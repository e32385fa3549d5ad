"""``nnunet-mm benchmark accuracy``: trainers compared on one dataset with the same plans, fold and iteration
budget, through nnU-Net's own console scripts (train, predict), evaluated on held-out cases; optionally with
every non-empty subset of modalities (``nnunet-mm evaluate-missing``).

Writes a JSON report, a bar chart (PNG) and a Markdown section. With ``--page`` the section replaces the block
between ``<!-- accuracy:NAME -->`` and ``<!-- /accuracy:NAME -->`` in that page (appended when absent), so
re-running a benchmark updates its own table and nothing else.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

from nnunet_multimodal.atomic_files import write_text_atomic
from nnunet_multimodal.environment import dataset_folder, env_with_plugin
from nnunet_multimodal.text_table import markdown_table

SCHEMA_VERSION = 1


def fold_folder(results: Path, dataset_name: str, trainer: str, plans: str, configuration: str, fold: str) -> Path:
    return results / dataset_name / f"{trainer}__{plans}__{configuration}" / f"fold_{fold}"


def training_budget(folder: Path) -> dict:
    """Epochs, iterations per epoch and batch size as the trainer ran them (nnU-Net's debug.json)."""
    debug = json.loads((folder / "debug.json").read_text())
    budget = {key: int(debug[key]) for key in ("num_epochs", "num_iterations_per_epoch", "batch_size")}
    budget["iterations"] = budget["num_epochs"] * budget["num_iterations_per_epoch"]
    return budget


def check_same_budget(rows: list[dict]) -> None:
    iterations = {row["trainer"]: row["budget"]["iterations"] for row in rows}
    if len(set(iterations.values())) > 1:
        raise ValueError(f"the trainers ran different iteration budgets {iterations}; compare trainers with the same "
                         f"schedule (e.g. all _20x25it_NoMirroring variants) or pass --allow-different-budgets")


def key_names(labels: dict) -> dict[str, str]:
    """dataset.json label or region names by the evaluation's keys ("1" for a label, "(1, 2, 3)" for a region)."""
    names = {}
    for name, value in labels.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        for key in {str(value), str(tuple(values)), str(values[0]) if len(values) == 1 else None} - {None}:
            names[key] = name
    return names


def replace_section(page: Path, name: str, body: str) -> None:
    """Put ``body`` between the section's markers in ``page`` (appended with its markers when absent)."""
    start, end = f"<!-- accuracy:{name} -->", f"<!-- /accuracy:{name} -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    text = page.read_text() if page.is_file() else ""
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + ("\n\n" if text else "") + block + "\n"
    write_text_atomic(page, text)


def dice_plot(rows: list[dict], keys: list[str], names: dict[str, str], filename: Path, title: str) -> None:
    import numpy as np

    from nnunet_multimodal.figures import new_figure, save_figure

    width = 0.8 / len(rows)
    fig, ax = new_figure(figsize=(1.6 * len(keys) + 6, 4))
    for i, row in enumerate(rows):
        ax.bar(np.arange(len(keys)) + i * width, [row["dice"][k] for k in keys], width, label=row["trainer"])
    ax.set_xticks(np.arange(len(keys)) + 0.4 - width / 2, [f"Dice {names.get(k, k)}" for k in keys])
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    save_figure(fig, filename)


def markdown_section(report: dict, plot_name: str) -> str:
    keys, names = report["keys"], report["names"]
    lines = [f"Dataset `{report['dataset']}`, configuration `{report['configuration']}`, plans `{report['plans']}`, "
             f"fold {report['fold']}, {report['cases']} evaluated cases ({report.get('cases_source', 'held out')}); "
             f"machine: {report['machine']}; "
             f"{report['date']}. Command:", "", "```bash", report["command"], "```", ""]
    header = ["trainer", "iterations (epochs × it)", "batch"] + [f"Dice {names.get(k, k)}" for k in keys] \
        + ["mean Dice", "mean HD95"]
    table = [header]
    for row in report["rows"]:
        b = row["budget"]
        table.append([f"`{row['trainer']}`", f"{b['iterations']} ({b['num_epochs']} × {b['num_iterations_per_epoch']})",
                      str(b["batch_size"])] + [f"{row['dice'][k]:.3f}" for k in keys]
                     + [f"{row['mean_dice']:.3f}", f"{row['mean_hd95']:.1f}"])
    lines += [markdown_table(table), "", f"![Dice per trainer]({plot_name})"]
    sweeps = [row for row in report["rows"] if row.get("missing")]
    if sweeps:
        subsets = list(sweeps[0]["missing"])
        lines += ["", "Mean foreground Dice with only these modalities present (the others missing):", ""]
        table = [["modalities"] + [f"`{row['trainer']}`" for row in sweeps]]
        table += [[subset] + [f"{row['missing'][subset]['mean']:.3f}" for row in sweeps] for subset in subsets]
        lines.append(markdown_table(table))
    return "\n".join(lines) + "\n"


def run_accuracy_benchmark(args) -> int:
    from nnunet_multimodal.demo import run_console_script
    from nnunet_multimodal.evaluation.evaluate import (
        evaluate_folders,
        labels_or_regions_from_dataset_json,
        read_dataset_json,
        write_outputs,
    )

    env = env_with_plugin()
    raw = dataset_folder(args.d, "nnUNet_raw")
    dataset_name = raw.name
    images = Path(args.i) if args.i else raw / "imagesTs"
    reference = Path(args.ref) if args.ref else raw / "labelsTs"
    for folder, flag in ((images, "-i"), (reference, "-ref")):
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} does not exist: pass the held-out images and labels with {flag}")
    dataset_json = read_dataset_json(raw / "dataset.json")
    labels_or_regions = labels_or_regions_from_dataset_json(dataset_json)
    file_ending = dataset_json.get("file_ending", ".nii.gz")
    out = Path(args.o).resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    results = Path(env["nnUNet_results"])
    bin_dir = Path(sys.executable).parent
    device = ["-device", args.device]

    rows = []
    for trainer in args.tr:
        folder = fold_folder(results, dataset_name, trainer, args.p, args.c, args.f)
        row = {"trainer": trainer, "train_seconds": None}
        if (folder / "checkpoint_final.pth").is_file() and not args.retrain:
            print(f"{trainer}: reusing {folder / 'checkpoint_final.pth'}", flush=True)
        else:
            row["train_seconds"] = run_console_script(
                f"training {trainer}", [str(bin_dir / "nnUNetv2_train"), str(args.d), args.c, args.f, "-tr", trainer,
                                        "-p", args.p, *device], env, out / "logs" / f"train_{trainer}.log")
        row["budget"] = training_budget(folder)
        predictions = out / "predictions" / trainer
        row["predict_seconds"] = run_console_script(
            f"prediction with {trainer}", [str(bin_dir / "nnUNetv2_predict"), "-i", str(images), "-o", str(predictions),
                                           "-d", str(args.d), "-c", args.c, "-f", args.f, "-tr", trainer, "-p",
                                           args.p, *device, "-npp", "1", "-nps", "1", "--disable_progress_bar"],
            env, out / "logs" / f"predict_{trainer}.log")
        summary = evaluate_folders(reference, predictions, labels_or_regions, file_ending,
                                   ignore_label=dataset_json["labels"].get("ignore"), progress=False)
        write_outputs(summary, predictions)
        row["dice"] = {k: v["Dice"] for k, v in summary["mean"].items()}
        row["hd95"] = {k: v["HD95"] for k, v in summary["mean"].items()}
        row["mean_dice"], row["mean_hd95"] = summary["foreground_mean"]["Dice"], summary["foreground_mean"]["HD95"]
        if args.missing_sweep:
            sweep = out / "missing" / trainer
            run_console_script(f"missing-modality sweep of {trainer}", [
                str(bin_dir / "nnunet-mm"), "evaluate-missing", "-i", str(images), "-ref", str(reference), "-o",
                str(sweep), "-d", str(args.d), "-c", args.c, "-f", args.f, "-tr", trainer, "-p", args.p, *device],
                env, out / "logs" / f"missing_{trainer}.log")
            row["missing"] = json.loads((sweep / "table.json").read_text())
        rows.append(row)
    if not args.allow_different_budgets:
        check_same_budget(rows)

    keys = list(rows[0]["dice"])
    name = args.name or f"{dataset_name}_{args.c}"
    plot = out / f"accuracy_{name}.png"
    names = key_names(dataset_json["labels"])
    dice_plot(rows, keys, names, plot, f"{dataset_name} {args.c}, fold {args.f}: Dice on {reference.name}")
    report = {"schema_version": SCHEMA_VERSION, "dataset": dataset_name, "configuration": args.c, "plans": args.p,
              "fold": args.f, "cases": len(list(reference.glob(f"*{file_ending}"))),
              "cases_source": f"from {images}" if args.i else "held out: imagesTs", "keys": keys,
              "names": {k: names.get(k, k) for k in keys}, "rows": rows,
              "machine": f"{os.cpu_count()} CPU cores ({platform.machine()}), device {args.device}",
              "date": time.strftime("%Y-%m-%d"),
              "command": args.command_line}
    write_text_atomic(out / "accuracy.json", json.dumps(report, indent=2, default=float))
    if args.page:
        page = Path(args.page)
        page_plot = page.parent / plot.name
        if page_plot.resolve() != plot.resolve():
            page_plot.write_bytes(plot.read_bytes())
        replace_section(page, name, markdown_section(report, plot.name))
        print(f"updated section {name!r} of {page}")
    print(markdown_section(report, plot.name))
    print(f"wrote {out / 'accuracy.json'} and {plot}")
    return 0
