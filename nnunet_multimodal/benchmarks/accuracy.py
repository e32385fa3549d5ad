"""``nnunet-mm benchmark accuracy``: trainers compared on one dataset with the same plans, folds and iteration
budget, through nnU-Net's own console scripts (train, predict), evaluated on held-out cases; optionally with
every non-empty subset of modalities (``nnunet-mm evaluate-missing``).

A *run* is one training of one trainer on one fold in one repeat. nnU-Net does not seed its training, so repeats
are independent trainings whose spread is the one a user would see: repeat 1 lives in ``nnUNet_results`` (a
finished fold there is reused), repeat r > 1 in ``<-o>/repeat_r/nnUNet_results``. Every run predicts the same
held-out cases; the report gives each trainer's mean ± sd over its runs and, per case and run, whether it did
better or worse than the baseline trainer (the first ``-tr``) in the same fold and repeat. A finished run's results
are kept in ``<-o>/runs/``; re-running (e.g. with one more fold) reuses them while their checkpoint, the files
of the held-out folders, the evaluation settings and the sweep setting are unchanged (a run with the sweep also
serves one without it).

Writes a JSON report and a bar chart (PNG), both named after ``--name`` (two benchmarks sharing ``-o`` under
different names keep both reports), and a Markdown section. With ``--page`` the section replaces the block
between ``<!-- accuracy:NAME -->`` and ``<!-- /accuracy:NAME -->`` in that page (appended when absent), so
re-running a benchmark updates its own table and nothing else.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import shutil
import statistics
import sys
import time
from pathlib import Path

from nnunet_multimodal.atomic_files import write_text_atomic
from nnunet_multimodal.benchmarks.plans_check import check_single_stage_configuration
from nnunet_multimodal.environment import dataset_folder, env_with_plugin
from nnunet_multimodal.text_table import markdown_table

SCHEMA_VERSION = 2
# a per-case foreground Dice difference below this counts as a tie in the paired comparison
TIE_TOLERANCE = 0.005
CASCADE_ADVICE = (", or train the cascade with nnUNetv2_train and score it with nnUNetv2_predict "
                  "-prev_stage_predictions and nnunet-mm evaluate")


def fold_folder(results: Path, dataset_name: str, trainer: str, plans: str, configuration: str, fold: str) -> Path:
    return results / dataset_name / f"{trainer}__{plans}__{configuration}" / f"fold_{fold}"


def repeat_results(results: Path, out: Path, repeat: int) -> Path:
    """nnUNet_results of a repeat: the user's for the first, the benchmark's own output folder for the others."""
    return results if repeat == 1 else out / f"repeat_{repeat}" / "nnUNet_results"


def folder_fingerprint(folder: Path) -> list[list]:
    """The files of ``folder``: name, size and modification time of each."""
    return [[path.name, stat.st_size, stat.st_mtime_ns] for path in sorted(folder.iterdir()) if path.is_file()
            for stat in [path.stat()]]


def run_identity(checkpoint: Path, images: Path, reference: Path, missing_sweep: bool,
                 evaluation_settings: dict) -> dict:
    """What a stored run's results depend on: the checkpoint file (size, modification time), the files of the
    held-out folders, how they are evaluated (labels or regions, ignore label, device) and whether the modality
    sweep ran."""
    stat = checkpoint.stat()
    return {"schema_version": SCHEMA_VERSION, "checkpoint": str(checkpoint.resolve()), "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns, "images": str(images.resolve()), "image_files": folder_fingerprint(images),
            "reference": str(reference.resolve()), "reference_files": folder_fingerprint(reference),
            "evaluation": evaluation_settings, "missing_sweep": missing_sweep}


def stored_run(record: Path, identity: dict) -> dict | None:
    """The run stored in ``record`` if it was made with ``identity``, else None. A run stored with the modality
    sweep also serves a request without it (the sweep left out), so a benchmark without ``--missing-sweep`` after
    one with it predicts nothing again and keeps the stored sweep for the next request with it."""
    if not record.is_file():
        return None
    stored = json.loads(record.read_text())
    if stored.get("identity") == identity:
        return stored["run"]
    if not identity["missing_sweep"] and stored.get("identity") == dict(identity, missing_sweep=True):
        return {key: value for key, value in stored["run"].items() if key != "missing"}
    return None


def training_budget(folder: Path) -> dict:
    """Epochs, iterations per epoch and batch size as the trainer ran them (nnU-Net's debug.json)."""
    debug = json.loads((folder / "debug.json").read_text())
    budget = {key: int(debug[key]) for key in ("num_epochs", "num_iterations_per_epoch", "batch_size")}
    budget["iterations"] = budget["num_epochs"] * budget["num_iterations_per_epoch"]
    return budget


def check_same_budget(runs: list[dict]) -> None:
    """Every run of every trainer with the same number of iterations (a reused fold may have been trained with
    another schedule than the repeats trained now)."""
    iterations = {}
    for run in runs:
        iterations.setdefault(run["trainer"], set()).add(run["budget"]["iterations"])
    if len(set().union(*iterations.values())) > 1:
        budgets = {trainer: sorted(values) for trainer, values in iterations.items()}
        raise ValueError(f"the runs have different iteration budgets {budgets}; compare trainers with the same "
                         f"schedule (e.g. all _20x25it_NoMirroring variants), retrain the odd folds (--retrain) or "
                         f"pass --allow-different-budgets")


def check_folds(folds: list[str], preprocessed: Path) -> None:
    """The folds exist in the dataset's split (nnU-Net's default 5-fold split until splits_final.json is written)."""
    splits = preprocessed / "splits_final.json"
    count = len(json.loads(splits.read_text())) if splits.is_file() else 5
    unknown = [fold for fold in folds if fold not in {str(i) for i in range(count)} | {"all"}]
    if unknown:
        source = str(splits) if splits.is_file() else "nnU-Net's default split"
        raise ValueError(f"fold(s) {unknown} do not exist: {source} has folds 0 to {count - 1}; pass -f with "
                         f"those (or 'all')")


def check_no_duplicates(values: list[str], flag: str) -> None:
    repeated = sorted({value for value in values if values.count(value) > 1})
    if repeated:
        raise ValueError(f"{flag} lists {', '.join(repeated)} more than once: give each once")


REPORT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def check_report_name(name: str) -> None:
    """Refuse a ``--name`` that is not one file-name stem: a path separator would put the report elsewhere (or fail
    after hours of training), and ``--`` would end the page's ``<!-- accuracy:NAME -->`` marker comment."""
    if not REPORT_NAME.fullmatch(name) or "--" in name:
        raise ValueError(f"--name {name!r} is not usable: it names accuracy_NAME.json, accuracy_NAME.png and the "
                         f"page's section; start with a letter or digit, then letters, digits, '.', '_' and single "
                         f"'-' (e.g. --name brats_2d_tiny)")


def key_names(labels: dict) -> dict[str, str]:
    """dataset.json label or region names by the evaluation's keys ("1" for a label, "(1, 2, 3)" for a region)."""
    names = {}
    for name, value in labels.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        for key in {str(value), str(tuple(values)), str(values[0]) if len(values) == 1 else None} - {None}:
            names[key] = name
    return names


def mean_and_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation, NaN ignored (sd NaN for fewer than two values: no spread measured)."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def case_foreground_dice(summary: dict) -> dict[str, float]:
    """Per case (prediction file name): mean Dice over the labels or regions it defines (NaN ones ignored)."""
    return {Path(case["prediction_file"]).name: mean_and_sd([m["Dice"] for m in case["metrics"].values()])[0]
            for case in summary["metric_per_case"]}


def paired_counts(runs: list[dict], baseline_runs: list[dict]) -> dict:
    """Each case of each run against the baseline's same case in the same fold and repeat: better, worse or tied
    (|difference of foreground Dice| < TIE_TOLERANCE), and the mean difference."""
    baseline = {(run["repeat"], run["fold"]): run["case_dice"] for run in baseline_runs}
    differences = []
    for run in runs:
        reference = baseline[(run["repeat"], run["fold"])]
        if set(run["case_dice"]) != set(reference):
            raise ValueError(f"repeat {run['repeat']}, fold {run['fold']}: the trainers were evaluated on different "
                             f"cases ({sorted(set(run['case_dice']) ^ set(reference))} in one only); rerun the "
                             f"benchmark into a new output folder (-o)")
        differences += [dice - reference[case] for case, dice in run["case_dice"].items()
                        if not (math.isnan(dice) or math.isnan(reference[case]))]
    return {"better": sum(d >= TIE_TOLERANCE for d in differences),
            "worse": sum(d <= -TIE_TOLERANCE for d in differences),
            "tied": sum(abs(d) < TIE_TOLERANCE for d in differences),
            "mean_difference": mean_and_sd(differences)[0]}


def aggregate(trainer: str, runs: list[dict], keys: list[str]) -> dict:
    """A trainer's row: mean and sd over its runs of the per-run mean Dice and HD95 of each key, and of the
    modality-subset sweep where one was run."""
    row = {"trainer": trainer, "runs": len(runs), "budget": runs[0]["budget"],
           "dice": {}, "dice_sd": {}, "hd95": {}}
    for key in keys:
        row["dice"][key], row["dice_sd"][key] = mean_and_sd([run["dice"][key] for run in runs])
        row["hd95"][key] = mean_and_sd([run["hd95"][key] for run in runs])[0]
    row["mean_dice"], row["mean_dice_sd"] = mean_and_sd([run["mean_dice"] for run in runs])
    row["mean_hd95"] = mean_and_sd([run["mean_hd95"] for run in runs])[0]
    if all(run.get("missing") for run in runs):
        row["missing"] = {subset: {key: mean_and_sd([run["missing"][subset][key] for run in runs])[0]
                                   for key in runs[0]["missing"][subset]}
                          for subset in runs[0]["missing"]}
    return row


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
        ax.bar(np.arange(len(keys)) + i * width, [row["dice"][k] for k in keys], width, label=row["trainer"],
               yerr=np.nan_to_num([row["dice_sd"][k] for k in keys]), capsize=2)
    ax.set_xticks(np.arange(len(keys)) + 0.4 - width / 2, [f"Dice {names.get(k, k)}" for k in keys])
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    save_figure(fig, filename)


def _mean_sd(mean: float, sd: float) -> str:
    return f"{mean:.3f}" if math.isnan(sd) else f"{mean:.3f} ± {sd:.3f}"


def markdown_section(report: dict, plot_name: str) -> str:
    keys, names, baseline = report["keys"], report["names"], report["baseline"]
    folds, repeats = report["folds"], report["repeats"]
    spread = (f"mean ± sample sd over {len(folds) * repeats} runs (folds {', '.join(folds)} × {repeats} independent "
              f"trainings each; nnU-Net's training is not seeded)" if len(folds) * repeats > 1 else "one run")
    lines = [f"Dataset `{report['dataset']}`, configuration `{report['configuration']}`, plans `{report['plans']}`, "
             f"{report['cases']} evaluated cases ({report.get('cases_source', 'held out')}) per run; {spread}; "
             f"machine: {report['machine']}; {report['date']}. Command:", "", "```bash", report["command"], "```", "",
             f"The last column counts, over every case of every run, where a trainer's foreground Dice beat "
             f"(by ≥ {TIE_TOLERANCE}) or trailed `{baseline}` trained on the same fold in the same repeat.", ""]
    header = ["trainer", "iterations (epochs × it)", "batch"] + [f"Dice {names.get(k, k)}" for k in keys] \
        + ["mean Dice", "mean HD95", f"cases better / worse than `{baseline}`"]
    table = [header]
    for row in report["rows"]:
        b = row["budget"]
        paired = row.get("paired")
        table.append([f"`{row['trainer']}`", f"{b['iterations']} ({b['num_epochs']} × {b['num_iterations_per_epoch']})",
                      str(b["batch_size"])] + [_mean_sd(row["dice"][k], row["dice_sd"][k]) for k in keys]
                     + [_mean_sd(row["mean_dice"], row["mean_dice_sd"]), f"{row['mean_hd95']:.1f}",
                        f"{paired['better']} / {paired['worse']} ({paired['mean_difference']:+.3f})" if paired
                        else "(baseline)"])
    lines += [markdown_table(table), "", f"![Dice per trainer]({plot_name})"]
    sweeps = [row for row in report["rows"] if row.get("missing")]
    if sweeps:
        subsets = list(sweeps[0]["missing"])
        lines += ["", "Mean foreground Dice with only these modalities present (the others missing), mean over runs:",
                  ""]
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

    if args.repeats < 1:
        raise ValueError(f"--repeats must be at least 1, got {args.repeats}")
    check_no_duplicates(args.f, "-f")
    check_no_duplicates(args.tr, "-tr")
    if args.name is not None:
        check_report_name(args.name)
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
    preprocessed = dataset_folder(args.d, "nnUNet_preprocessed")
    check_single_stage_configuration(preprocessed, args.p, args.c, "accuracy", CASCADE_ADVICE)
    check_folds(args.f, preprocessed)
    evaluation_settings = {"labels_or_regions": str(labels_or_regions),
                           "ignore_label": dataset_json["labels"].get("ignore"), "device": args.device}
    out = Path(args.o).resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    results = Path(env["nnUNet_results"])
    bin_dir = Path(sys.executable).parent
    device = ["-device", args.device]

    runs = {trainer: [] for trainer in args.tr}
    for repeat in range(1, args.repeats + 1):
        run_env = dict(env, nnUNet_results=str(repeat_results(results, out, repeat)))
        for fold in args.f:
            for trainer in args.tr:
                tag = f"{trainer}_repeat{repeat}_fold{fold}"
                folder = fold_folder(Path(run_env["nnUNet_results"]), dataset_name, trainer, args.p, args.c, fold)
                run = {"repeat": repeat, "fold": fold, "train_seconds": None}
                if (folder / "checkpoint_final.pth").is_file() and not args.retrain:
                    print(f"{trainer}, repeat {repeat}, fold {fold}: reusing {folder / 'checkpoint_final.pth'}",
                          flush=True)
                else:
                    run["train_seconds"] = run_console_script(
                        f"training {tag}", [str(bin_dir / "nnUNetv2_train"), str(args.d), args.c, fold, "-tr",
                                            trainer, "-p", args.p, *device], run_env, out / "logs" / f"train_{tag}.log")
                record = out / "runs" / f"{tag}.json"
                identity = run_identity(folder / "checkpoint_final.pth", images, reference, args.missing_sweep,
                                        evaluation_settings)
                stored = None if run["train_seconds"] is not None else stored_run(record, identity)
                if stored is not None:
                    print(f"{trainer}, repeat {repeat}, fold {fold}: reusing the results in {record}", flush=True)
                    runs[trainer].append(stored)
                    continue
                run["budget"] = training_budget(folder)
                predictions = out / "predictions" / trainer / f"repeat_{repeat}" / f"fold_{fold}"
                # the benchmark's own folder: an earlier run's predictions of cases no longer held out must not
                # be evaluated with this run's
                shutil.rmtree(predictions, ignore_errors=True)
                run["predict_seconds"] = run_console_script(
                    f"prediction with {tag}", [str(bin_dir / "nnUNetv2_predict"), "-i", str(images), "-o",
                                               str(predictions), "-d", str(args.d), "-c", args.c, "-f", fold, "-tr",
                                               trainer, "-p", args.p, *device, "-npp", "1", "-nps", "1",
                                               "--disable_progress_bar"], run_env, out / "logs" / f"predict_{tag}.log")
                summary = evaluate_folders(reference, predictions, labels_or_regions, file_ending,
                                           ignore_label=dataset_json["labels"].get("ignore"), progress=False)
                write_outputs(summary, predictions)
                run["dice"] = {k: v["Dice"] for k, v in summary["mean"].items()}
                run["hd95"] = {k: v["HD95"] for k, v in summary["mean"].items()}
                run["mean_dice"] = summary["foreground_mean"]["Dice"]
                run["mean_hd95"] = summary["foreground_mean"]["HD95"]
                run["case_dice"] = case_foreground_dice(summary)
                if args.missing_sweep:
                    sweep = out / "missing" / trainer / f"repeat_{repeat}" / f"fold_{fold}"
                    run_console_script(f"missing-modality sweep of {tag}", [
                        str(bin_dir / "nnunet-mm"), "evaluate-missing", "-i", str(images), "-ref", str(reference),
                        "-o", str(sweep), "-d", str(args.d), "-c", args.c, "-f", fold, "-tr", trainer, "-p", args.p,
                        *device], run_env, out / "logs" / f"missing_{tag}.log")
                    run["missing"] = json.loads((sweep / "table.json").read_text())
                record.parent.mkdir(exist_ok=True)
                write_text_atomic(record, json.dumps({"identity": identity, "run": run}, indent=2, default=float))
                runs[trainer].append(run)

    keys = list(runs[args.tr[0]][0]["dice"])
    rows = [aggregate(trainer, trainer_runs, keys) for trainer, trainer_runs in runs.items()]
    if not args.allow_different_budgets:
        check_same_budget([{"trainer": t, "budget": run["budget"]} for t, trainer_runs in runs.items()
                           for run in trainer_runs])
    baseline = args.tr[0]
    for row in rows[1:]:
        row["paired"] = paired_counts(runs[row["trainer"]], runs[baseline])

    name = args.name or f"{dataset_name}_{args.c}"
    plot = out / f"accuracy_{name}.png"
    names = key_names(dataset_json["labels"])
    dice_plot(rows, keys, names, plot, f"{dataset_name} {args.c}, folds {', '.join(args.f)}, {args.repeats} "
                                       f"repeat(s): Dice on {reference.name}")
    report = {"schema_version": SCHEMA_VERSION, "dataset": dataset_name, "configuration": args.c, "plans": args.p,
              "folds": list(args.f), "repeats": args.repeats, "baseline": baseline,
              "cases": len(list(reference.glob(f"*{file_ending}"))),
              "cases_source": f"from {images}" if args.i else "held out: imagesTs", "keys": keys,
              "names": {k: names.get(k, k) for k in keys}, "rows": rows, "runs": runs,
              "machine": f"{os.cpu_count()} CPU cores ({platform.machine()}), device {args.device}",
              "date": time.strftime("%Y-%m-%d"),
              "command": args.command_line}
    report_path = out / f"accuracy_{name}.json"
    write_text_atomic(report_path, json.dumps(report, indent=2, default=float))
    if args.page:
        page = Path(args.page)
        page_plot = page.parent / plot.name
        if page_plot.resolve() != plot.resolve():
            page_plot.write_bytes(plot.read_bytes())
        replace_section(page, name, markdown_section(report, plot.name))
        print(f"updated section {name!r} of {page}")
    print(markdown_section(report, plot.name))
    print(f"wrote {report_path} and {plot}")
    return 0
