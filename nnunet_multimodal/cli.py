"""``nnunet-mm``: the plugin's commands on top of nnU-Net's own console scripts."""

from __future__ import annotations

import argparse
import shlex
import sys

from nnunet_multimodal.environment import dataset_folder
from nnunet_multimodal.user_errors import is_user_error


def _cmd_env(args) -> int:
    from nnunet_multimodal.environment import env_report

    print(env_report())
    return 0


def _add_env(sub) -> None:
    p = sub.add_parser("env", help="print the nnUNet_extTrainer export line and unset nnU-Net folders")
    p.set_defaults(func=_cmd_env)


def _cmd_verify(args) -> int:
    from nnunet_multimodal.data.verify import verify_dataset

    folder = args.folder or dataset_folder(args.d, "nnUNet_raw")
    problems = verify_dataset(folder, progress=None if args.quiet else lambda m: print(m, file=sys.stderr))
    for problem in problems:
        print(problem)
    print(f"{folder}: {len(problems)} problem(s)" if problems else f"{folder}: OK")
    return 1 if problems else 0


def _add_verify(sub) -> None:
    p = sub.add_parser("verify", help="check a raw dataset: channels, geometry, NaN/Inf, label values")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("-d", help="dataset name or id (looked up in nnUNet_raw)")
    group.add_argument("--folder", help="a raw dataset folder (instead of -d)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=_cmd_verify)


def _cmd_plans(args) -> int:
    import json

    from nnunet_multimodal.plans.derive import inheriting_configurations, write_derived_plans

    folder = dataset_folder(args.d, "nnUNet_preprocessed")
    name = args.o or f"{args.p}_mm{'tiny' if args.tiny else ''}"
    target = write_derived_plans(folder, args.p, args.c, name, args.tiny, args.set, args.force)
    inheriting = inheriting_configurations(json.loads(target.read_text()), args.c)
    if inheriting:
        print(f"{', '.join(inheriting)} inherit{'s' if len(inheriting) == 1 else ''} from {', '.join(args.c)} and "
              f"get{'s' if len(inheriting) == 1 else ''} the same changes")
    print(f"wrote {target}\nuse it with: nnUNetv2_train {args.d} {args.c[0]} FOLD -tr TRAINER -p {name}")
    return 0


def _add_plans(sub) -> None:
    p = sub.add_parser("plans", help="derive plans (tiny CPU variant, method knobs) from nnU-Net's plans")
    p.add_argument("-d", required=True, help="dataset name or id")
    p.add_argument("-c", nargs="+", default=["2d"], help="configurations to change (default: 2d)")
    p.add_argument("-p", default="nnUNetPlans", help="source plans identifier (default: nnUNetPlans)")
    p.add_argument("-o", help="new plans identifier (default: <source>_mmtiny with --tiny, else <source>_mm)")
    p.add_argument("--tiny", action="store_true", help="small patch, 4 stages of 16-128 features, small batch")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KNOB=VALUE",
                   help="method knob stored under configurations[c]['multimodal'][SECTION] (JSON value)")
    p.add_argument("--force", action="store_true",
                   help="replace existing plans of this name with other settings (models trained with them no longer "
                        "match)")
    p.set_defaults(func=_cmd_plans)


def _cmd_demo(args) -> int:
    from nnunet_multimodal.demo import run_demo

    return run_demo(root=args.root, quick=args.quick, dataset_id=args.dataset_id)


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="phantom dataset -> plan -> train method and baseline -> predict -> compare")
    p.add_argument("--root", default="nnunet_mm_demo", help="working folder (default: ./nnunet_mm_demo)")
    p.add_argument("--quick", action="store_true",
                   help="2 epochs x 5 iterations (the _2x5it_NoMirroring variants), for CI (a few minutes)")
    p.add_argument("--dataset-id", type=int, default=990, help="id of the phantom dataset (default: 990)")
    p.set_defaults(func=_cmd_demo)


def _cmd_phantom(args) -> int:
    import os
    import time
    from pathlib import Path

    from nnunet_multimodal.data.brats_phantom import BratsPhantomSpec
    from nnunet_multimodal.data.phantom_datasets import refuse_existing, write_phantom_dataset
    from nnunet_multimodal.data.prostate_phantom import ProstatePhantomSpec
    from nnunet_multimodal.environment import NNUNET_FOLDERS

    if not os.environ.get("nnUNet_raw"):
        raise ValueError("nnUNet_raw is not set: run `nnunet-mm env` to see how to set it")
    # a model or preprocessed data left under this id would silently belong to other images
    refuse_existing(args.d, [Path(os.environ[name]) for name in NNUNET_FOLDERS if os.environ.get(name)])
    spec_class = {"brats": BratsPhantomSpec, "prostate": ProstatePhantomSpec}[args.kind]
    spec = spec_class.at_difficulty(args.difficulty, seed=args.seed)
    started = time.perf_counter()
    folder = write_phantom_dataset(os.environ["nnUNet_raw"], args.d, spec, args.cases, args.test_cases)
    per_case = (time.perf_counter() - started) / (args.cases + args.test_cases)
    print(f"wrote a SYNTHETIC {args.kind}-like phantom dataset (not real patients): {folder} ({args.cases} training, "
          f"{args.test_cases} held-out cases in imagesTs/labelsTs, difficulty {args.difficulty}, seed {args.seed}, "
          f"{per_case:.2f} s per case)\nnext: nnUNetv2_plan_and_preprocess -d {args.d} --verify_dataset_integrity")
    return 0


def _add_phantom(sub) -> None:
    p = sub.add_parser("phantom", help="write a SYNTHETIC BraTS-like (3D) or prostate-like (2D) phantom dataset "
                                       "into nnUNet_raw (docs/phantoms.md)")
    p.add_argument("--kind", required=True, choices=["brats", "prostate"],
                   help="brats: T1, T1c, T2, FLAIR with WT/TC/ET regions; prostate: T2W, ADC, HBV with gland and "
                        "lesion")
    p.add_argument("-d", type=int, required=True, help="dataset id to write (refused if it exists)")
    p.add_argument("--cases", type=int, default=40, help="training cases (default: 40)")
    p.add_argument("--test-cases", type=int, default=10, help="held-out cases in imagesTs/labelsTs (default: 10)")
    p.add_argument("--seed", type=int, default=0, help="cases are reproducible from (seed, case index) (default: 0)")
    p.add_argument("--difficulty", choices=["easy", "realistic", "hard"], default="realistic",
                   help="noise, bias, lesion contrast and size presets (default: realistic)")
    p.set_defaults(func=_cmd_phantom)


def _cmd_attention_maps(args) -> int:
    from nnunet_multimodal.inference.attention_maps import export_attention_maps

    folder = dataset_folder(args.d, "nnUNet_results") / f"{args.tr}__{args.p}__{args.c}"
    output = export_attention_maps(folder, args.f, args.chk, args.i, args.o, args.device)
    print(f"wrote {output}")
    return 0


def _add_attention_maps(sub) -> None:
    p = sub.add_parser("attention-maps", help="CMSAD: each modality's attention maps per encoder stage for a case")
    p.add_argument("-d", required=True, help="dataset name or id")
    p.add_argument("-c", required=True, help="configuration")
    p.add_argument("-f", default="0", help="fold (default: 0)")
    p.add_argument("-tr", default="nnUNetTrainerCMSAD", help="trainer (default: nnUNetTrainerCMSAD)")
    p.add_argument("-p", default="nnUNetPlans", help="plans identifier")
    p.add_argument("-chk", default="checkpoint_final.pth", help="checkpoint file name")
    p.add_argument("-i", nargs="+", required=True, help="the case's image files, one per modality, in channel order")
    p.add_argument("-o", required=True, help="output PNG")
    p.add_argument("-device", default="cpu", choices=["cpu", "cuda"])
    p.set_defaults(func=_cmd_attention_maps)


def _cmd_convert(args) -> int:
    from nnunetv2.paths import nnUNet_raw

    from nnunet_multimodal.data.convert.formats import convert, convert_mmwhs
    from nnunet_multimodal.data.convert.msd import convert_msd

    if not nnUNet_raw.is_set():
        raise ValueError("nnUNet_raw is not set: run `nnunet-mm env` to see how to set it")
    raw = nnUNet_raw.get()
    if args.format == "msd":
        written = [(convert_msd(args.source, raw, args.d), None)]
    elif args.format == "mmwhs":
        written = convert_mmwhs(args.source, raw, args.d, args.name, args.skip_bad, progress=True)
    else:
        written = [convert(args.format, args.source, raw, args.d, args.name, args.skip_bad, progress=True)]
    for folder, report in written:
        if report is not None:
            print(report)
        print(f"wrote {folder} (verified); next: nnUNetv2_plan_and_preprocess -d {folder.name[7:10]} "
              f"--verify_dataset_integrity")
    return 0


def _add_convert(sub) -> None:
    p = sub.add_parser("convert", help="challenge data -> nnU-Net raw dataset, resampled and verified")
    p.add_argument("format", choices=["brats", "brats2023", "brats2024", "msd", "picai", "isles22", "mmwhs"],
                   help="source layout (see docs/data/)")
    p.add_argument("source", help="the source folder (BraTS case folders' parent, MSD TaskXX_Name, ISLES'22 BIDS "
                                  "root, PI-CAI folder with images/ and annotations/, MM-WHS folder with ct_train/ "
                                  "and mr_train/)")
    p.add_argument("-d", type=int, required=True,
                   help="dataset id to write in nnUNet_raw (mmwhs: CT gets it, MR the next one)")
    p.add_argument("--name", help="dataset name (default: from the format; msd keeps the task's name)")
    p.add_argument("--skip-bad", action="store_true", help="skip cases that fail and report them")
    p.set_defaults(func=_cmd_convert)


def _note_unpredicted_references(summary: dict, reference_folder: str) -> None:
    unpredicted = summary["references_without_prediction"]
    if unpredicted:
        shown = ", ".join(unpredicted[:5]) + (", ..." if len(unpredicted) > 5 else "")
        print(f"nnunet-mm evaluate: note: {len(unpredicted)} reference(s) in {reference_folder} have no prediction "
              f"and are not scored: {shown}", file=sys.stderr)


def _check_evaluate_options(args) -> None:
    """One option per concern: a challenge's --metrics brings its empty-mask values and lesion definition (BraTS:
    chosen by --brats-task), so the options setting those for --metrics nnunet cannot come with it."""
    if args.metrics != "nnunet":
        given = [flag for flag, value in (("--convention", args.convention), ("--lesion-wise", args.lesion_wise),
                                          ("--lesion-dilation", args.lesion_dilation),
                                          ("--lesion-min-volume", args.lesion_min_volume)) if value]
        if given:
            raise ValueError(f"{', '.join(given)} set up --metrics nnunet; --metrics {args.metrics} uses its "
                             f"challenge's empty-mask values and lesion definition: drop {', '.join(given)}"
                             + (" (pick the task with --brats-task)" if args.metrics == "brats" else ""))
    if args.brats_task and args.metrics != "brats":
        raise ValueError("--brats-task sets the lesion parameters of --metrics brats: add --metrics brats")
    if (args.lesion_dilation or args.lesion_min_volume) and not args.lesion_wise:
        raise ValueError("--lesion-dilation and --lesion-min-volume set up the lesion-wise metrics: add --lesion-wise")


def _cmd_evaluate(args) -> int:
    from nnunet_multimodal.evaluation.brats_scorer import DEFAULT_BRATS_TASK
    from nnunet_multimodal.evaluation.evaluate import (
        HEADLINE_METRICS,
        declared_labels,
        evaluate_folders,
        labels_or_regions_from_dataset_json,
        read_dataset_json,
        write_outputs,
    )
    from nnunet_multimodal.evaluation.metrics import LesionSettings

    if args.djfile:
        dataset_json = read_dataset_json(args.djfile)
        labels_or_regions = labels_or_regions_from_dataset_json(dataset_json)
        file_ending = dataset_json.get("file_ending", ".nii.gz")
        ignore_label = dataset_json["labels"].get("ignore")
        declared = declared_labels(dataset_json, args.djfile)
    elif args.l:
        labels_or_regions, file_ending, ignore_label, declared = args.l, args.file_ending, None, None
    else:
        raise ValueError("pass -djfile dataset.json (labels and regions from it) or -l LABEL [LABEL ...]")
    _check_evaluate_options(args)
    if args.metrics == "brats" and any(4 in (lr if isinstance(lr, tuple) else (lr,)) for lr in labels_or_regions):
        print("nnunet-mm evaluate: note: label 4 (BraTS 2024's resection cavity) is scored with the BraTS 2023 "
              "scorer's rules; the 2024 post-treatment scorer also merges lesions across sub-regions and uses "
              "other volume thresholds, so its values can differ (docs/evaluation.md)", file=sys.stderr)
    lesions = LesionSettings(args.lesion_dilation, args.lesion_min_volume) if args.lesion_wise else None
    summary = evaluate_folders(args.ref, args.pred, labels_or_regions, file_ending, args.convention or "nnunet",
                               lesions, ignore_label, args.np, declared=declared, metrics=args.metrics,
                               brats_task=args.brats_task or DEFAULT_BRATS_TASK)
    _note_unpredicted_references(summary, args.ref)
    paths = write_outputs(summary, args.o or args.pred)
    for name, mean in summary["mean"].items():
        print(f"{name}: " + ", ".join(f"{m} {v:.4f}" for m, v in mean.items() if m in HEADLINE_METRICS))
    for name, detection in summary.get("picai_detection", {}).items():
        print(f"{name}: lesion sensitivity {detection['lesion_sensitivity']:.4f}, lesion precision "
              f"{detection['lesion_precision']:.4f}, false positives per case "
              f"{detection['false_positives_per_case']:.4f}")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="Dice, IoU, HD95, volumes, lesion-wise metrics per case and label/region")
    p.add_argument("-ref", required=True, help="folder with the reference segmentations")
    p.add_argument("-pred", required=True, help="folder with the predictions (same file names)")
    p.add_argument("-djfile", help="dataset.json: labels, regions, ignore label and file ending")
    p.add_argument("-l", nargs="+", type=int, help="labels to evaluate (without -djfile)")
    p.add_argument("--file-ending", default=".nii.gz", help="file ending without -djfile (default: .nii.gz)")
    p.add_argument("-o", help="output folder (default: the prediction folder)")
    p.add_argument("--metrics", choices=["nnunet", "brats", "isles22", "picai"], default="nnunet",
                   help="nnunet (default): nnU-Net's Dice and IoU, our HD95, volumes, optional lesion-wise metrics; "
                        "brats: the BraTS 2023+ scorer's values (lesion-wise and legacy Dice/HD95, sensitivity, "
                        "specificity, lesion counts, reference volume); isles22: ISLES'22's (Dice, absolute volume "
                        "and lesion-count differences, lesion-wise F1); picai: PI-CAI's Dice and lesion detection "
                        "on binary masks")
    p.add_argument("--brats-task", choices=["GLI", "SSA", "PED", "MEN", "MET"],
                   help="with --metrics brats: the challenge task whose lesion dilation and volume threshold to use "
                        "(GLI, SSA, PED: 3 and 50 mm³; MEN: 1 and 50; MET: 1 and 2; default GLI)")
    p.add_argument("--convention", choices=["nnunet", "brats"],
                   help="--metrics nnunet, empty masks: nnunet (default) = Dice NaN when both are empty, HD95 NaN "
                        "when either is (means skip NaN); brats = Dice 1/HD95 0 when both are empty, HD95 374 when "
                        "one is")
    p.add_argument("--lesion-wise", action="store_true",
                   help="--metrics nnunet: add lesion-wise Dice and HD95 in the manner of BraTS 2023 (scipy "
                        "components, our HD95); for the challenge's numbers use --metrics brats")
    p.add_argument("--lesion-dilation", type=int, default=0,
                   help="with --lesion-wise: dilation iterations grouping reference lesions and matching predictions")
    p.add_argument("--lesion-min-volume", type=float, default=0,
                   help="with --lesion-wise: reference lesions of at most this volume (mm³) are left out")
    p.add_argument("-np", type=int, default=1, help="processes (default: 1)")
    p.set_defaults(func=_cmd_evaluate)


def _missing_predictor(args, predict_previous_stage: bool = False):
    from nnunet_multimodal.inference.missing import MissingModalityPredictor

    model_folder = dataset_folder(args.d, "nnUNet_results") / f"{args.tr}__{args.p}__{args.c}"
    if not model_folder.is_dir():
        raise FileNotFoundError(f"no model {model_folder.name} in {model_folder.parent}; check -tr, -p and -c, or "
                                f"train it first (nnUNetv2_train {args.d} {args.c} FOLD -tr {args.tr} -p {args.p})")
    folds = [f if f == "all" else int(f) for f in args.f]
    return MissingModalityPredictor(model_folder, folds, args.chk, args.device, args.step_size, not args.disable_tta,
                                    predict_previous_stage)


def _note_interrupted_prediction(interrupted) -> None:
    completed = interrupted.completed
    shown = ", ".join(completed[:5]) + (", ..." if len(completed) > 5 else "")
    print(f"nnunet-mm predict: interrupted; {len(completed)} of {interrupted.total} case(s) are complete in "
          f"{interrupted.output_folder}{f' ({shown})' if completed else ''}, no partial file is left; rerun to "
          f"predict the others", file=sys.stderr)


def _add_model_arguments(p, input_required: bool) -> None:
    """The model and prediction flags ``predict`` and ``evaluate-missing`` share with nnUNetv2_predict."""
    p.add_argument("-i", required=input_required,
                   help="input folder (CASE_XXXX files; absent channel files are missing)"
                   + ("" if input_required else "; default: the fold's validation cases"))
    p.add_argument("-d", required=True, help="dataset name or id")
    p.add_argument("-c", required=True, help="configuration")
    p.add_argument("-f", nargs="+", default=["0"], help="folds (default: 0)")
    p.add_argument("-tr", default="nnUNetTrainer", help="trainer")
    p.add_argument("-p", default="nnUNetPlans", help="plans identifier")
    p.add_argument("-chk", default="checkpoint_final.pth", help="checkpoint file name")
    p.add_argument("-device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("-step_size", type=float, default=0.5, help="sliding-window step, fraction of the patch "
                                                               "(default: 0.5, as nnUNetv2_predict)")
    p.add_argument("--disable_tta", action="store_true", help="no mirroring test-time augmentation")


def _cmd_predict(args) -> int:
    from nnunet_multimodal.inference.missing import PredictionInterrupted

    missing = [n for option in args.missing for n in option.split(",") if n]
    try:
        predictor = _missing_predictor(args)
        used = predictor.predict_folder(args.i, args.o, missing, args.save_probabilities, args.overwrite,
                                        args.prev_stage_predictions)
    except PredictionInterrupted as interrupted:
        _note_interrupted_prediction(interrupted)
        return 130
    except KeyboardInterrupt:
        print("nnunet-mm predict: interrupted before any case was predicted", file=sys.stderr)
        return 130
    for case, modalities in used.items():
        print(f"{case}: {', '.join(modalities)}")
    print(f"wrote {len(used)} case(s) to {args.o} (modalities per case: modalities_used.json)")
    return 0


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="nnUNetv2_predict's common flags, plus --missing and absent files")
    _add_model_arguments(p, input_required=True)
    p.add_argument("-o", required=True, help="output folder")
    p.add_argument("--missing", action="append", default=[], metavar="A[,B]",
                   help="modalities to treat as missing, by dataset.json channel name (repeatable)")
    p.add_argument("--save_probabilities", action="store_true", help="also write .npz probabilities")
    p.add_argument("-prev_stage_predictions", metavar="FOLDER",
                   help="cascade stages (3d_cascade_fullres): the previous stage's segmentations of the input cases, "
                        "from nnunet-mm predict with the same modalities (required, as in nnUNetv2_predict)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace files in -o of this run's names that no earlier nnunet-mm predict wrote "
                        "(refused otherwise)")
    p.set_defaults(func=_cmd_predict)


def _cmd_evaluate_missing(args) -> int:
    try:
        return _evaluate_missing(args)
    except KeyboardInterrupt:
        print(f"nnunet-mm evaluate-missing: interrupted; the table was not written; the subsets predicted so far are "
              f"in {args.o}/predictions (each case file complete or absent); rerun to sweep again", file=sys.stderr)
        return 130


def _evaluate_missing(args) -> int:
    import tempfile
    from pathlib import Path

    from nnunet_multimodal.evaluation.evaluate import (
        declared_labels,
        labels_or_regions_from_dataset_json,
        read_dataset_json,
    )
    from nnunet_multimodal.evaluation.missing_sweep import evaluate_missing
    from nnunet_multimodal.text_table import text_table

    if (args.i is None) != (args.ref is None):
        raise ValueError("give both -i and -ref, or neither (the fold's validation cases)")
    if args.i is None and (len(args.f) != 1 or args.f[0] == "all"):
        raise ValueError("the validation cases belong to one fold; pass one fold number with -f, "
                         "or -i and -ref")
    dataset_json = read_dataset_json(args.djfile) if args.djfile else None  # checked before the model loads
    # each subset's previous-stage segmentations must come from the same subset: the sweep predicts them itself
    predictor = _missing_predictor(args, predict_previous_stage=True)
    if dataset_json is None:
        dataset_json = predictor.predictor.dataset_json
    declared = declared_labels(dataset_json, args.djfile or f"the model's dataset.json ({args.tr}, {args.c})")
    with tempfile.TemporaryDirectory(prefix="nnunet_mm_validation_") as staging:
        if args.i is None:
            from nnunet_multimodal.evaluation.missing_sweep import fold_validation_cases

            images, references = fold_validation_cases(dataset_folder(args.d, "nnUNet_preprocessed").name,
                                                       int(args.f[0]), predictor.file_ending, Path(staging))
        else:
            images, references = args.i, args.ref
        table = evaluate_missing(predictor, images, references, args.o,
                                 labels_or_regions_from_dataset_json(dataset_json), args.convention,
                                 dataset_json["labels"].get("ignore"), declared)
    keys = list(next(iter(table.values())))
    print(text_table([["modalities", *[f"Dice {k}" for k in keys]]]
                     + [[name, *[f"{row[k]:.3f}" for k in keys]] for name, row in table.items()]))
    print(f"wrote {args.o}/table.json, table.csv, heatmap.png")
    return 0


def _add_evaluate_missing(sub) -> None:
    p = sub.add_parser("evaluate-missing", help="Dice for every non-empty subset of modalities")
    _add_model_arguments(p, input_required=False)
    p.add_argument("-ref", help="reference segmentations of the input cases (with -i; default: nnU-Net's "
                                "gt_segmentations of the fold's validation cases)")
    p.add_argument("-o", required=True, help="output folder (predictions per subset, table, heatmap)")
    p.add_argument("-djfile", help="dataset.json for labels/regions (default: the model's)")
    p.add_argument("--convention", choices=["nnunet", "brats"], default="nnunet")
    p.set_defaults(func=_cmd_evaluate_missing)


def _cmd_mkd_prepare(args) -> int:
    from nnunet_multimodal.data.mkd_assistant import prepare_assistant

    plans_file = prepare_assistant(args.d, args.a, args.p, tuple(args.c), args.ap, args.o, args.np)
    print(f"wrote {plans_file}\ntrain with: nnUNetv2_train {args.d} {args.c[0]} FOLD -tr nnUNetTrainerMKD "
          f"-p {plans_file.stem}")
    return 0


def _add_mkd_prepare(sub) -> None:
    p = sub.add_parser("mkd-prepare", help="MKD: preprocess an assistant dataset with the target's plans")
    p.add_argument("-d", required=True, help="target dataset name or id")
    p.add_argument("-a", required=True, help="assistant dataset name or id (same labels and channel count)")
    p.add_argument("-p", default="nnUNetPlans", help="target plans identifier (default: nnUNetPlans)")
    p.add_argument("-c", nargs="+", default=["2d"], help="configurations (default: 2d)")
    p.add_argument("-ap", default="nnUNetPlans",
                   help="the assistant's own plans, source of its normalisation (default: nnUNetPlans)")
    p.add_argument("-o", help="new plans identifier (default: <plans>_mkd_<assistant dataset name>)")
    p.add_argument("-np", type=int, default=1, help="preprocessing processes (default: 1)")
    p.set_defaults(func=_cmd_mkd_prepare)


def _cmd_benchmark_accuracy(args) -> int:
    from nnunet_multimodal.benchmarks.accuracy import run_accuracy_benchmark

    return run_accuracy_benchmark(args)


def _cmd_benchmark_speed(args) -> int:
    from nnunet_multimodal.benchmarks.speed import run_speed_benchmark

    return run_speed_benchmark(args)


def _add_benchmark(sub) -> None:
    p = sub.add_parser("benchmark", help="benchmarks")
    bench = p.add_subparsers(dest="benchmark", required=True)
    p = bench.add_parser("speed", help="step time, inference time and peak memory as ratios to nnUNetTrainer")
    p.add_argument("-d", required=True, help="dataset name or id (preprocessed)")
    p.add_argument("-c", default="2d", help="configuration (default: 2d)")
    p.add_argument("-p", default="nnUNetPlans", help="plans identifier")
    p.add_argument("-tr", nargs="+", required=True, help="trainers to compare with nnUNetTrainer")
    p.add_argument("-device", default="cpu", choices=["cpu", "cuda"], help="device (default: cpu)")
    p.add_argument("--steps", type=int, default=10, help="timed training steps per round (default: 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed warm-up steps (default: 3)")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds over the trainers (default: 2)")
    p.add_argument("--cases", type=int, default=2, help="cases timed for sliding-window inference (default: 2)")
    p.add_argument("--json", help="write the results here as JSON")
    p.add_argument("--profile", help="folder for torch.profiler tables of a few more steps and prediction tiles per "
                                     "trainer (first round; their summaries go into the JSON)")
    p.set_defaults(func=_cmd_benchmark_speed)
    p = bench.add_parser("accuracy", help="trainers trained, predicted and evaluated with the same plans, folds and "
                                          "budget; Dice mean ± sd, paired comparison, PNG and a Markdown section")
    p.add_argument("-d", required=True, help="dataset name or id (planned and preprocessed)")
    p.add_argument("-c", default="2d", help="configuration (default: 2d)")
    p.add_argument("-p", default="nnUNetPlans", help="plans identifier")
    p.add_argument("-tr", nargs="+", required=True,
                   help="trainers to compare (same schedule, e.g. the _20x25it_NoMirroring variants)")
    p.add_argument("-f", nargs="+", default=["0"], help="folds, each trained and evaluated (default: 0)")
    p.add_argument("--repeats", type=int, default=1,
                   help="independent trainings per fold; repeat r > 1 trains into <-o>/repeat_r/nnUNet_results "
                        "(default: 1)")
    p.add_argument("-i", help="held-out images (default: the raw dataset's imagesTs)")
    p.add_argument("-ref", help="their labels (default: the raw dataset's labelsTs)")
    p.add_argument("-o", required=True, help="output folder: predictions, logs, accuracy_NAME.json, accuracy_NAME.png")
    p.add_argument("-device", default="cpu", choices=["cpu", "cuda"], help="device (default: cpu)")
    p.add_argument("--missing-sweep", action="store_true", help="also evaluate every non-empty modality subset")
    p.add_argument("--retrain", action="store_true",
                   help="train even where a checkpoint_final.pth exists (for repeat 1: the fold in your "
                        "nnUNet_results, which nnUNetv2_train then overwrites)")
    p.add_argument("--allow-different-budgets", action="store_true",
                   help="compare trainers whose epochs x iterations differ")
    p.add_argument("--page", help="Markdown page whose accuracy section to write (e.g. docs/benchmarks.md)")
    p.add_argument("--name", help="names the report, the plot and the page's section: a letter or digit, then "
                                  "letters, digits, '.', '_', single '-' (default: <dataset>_<configuration>)")
    p.set_defaults(func=_cmd_benchmark_accuracy)


def _add_submission(sub) -> None:
    from nnunet_multimodal.data.convert.layouts import LAYOUTS
    from nnunet_multimodal.submission.build import build_command

    p = sub.add_parser("submission", help="challenge submissions (docs/submission.md)")
    submission = p.add_subparsers(dest="submission", required=True)
    p = submission.add_parser("build", help="a self-contained submission folder: the selected models and "
                                            "postprocessing, pinned requirements, Dockerfile, runner script")
    p.add_argument("-d", required=True, help="dataset name or id (its folder in nnUNet_results)")
    p.add_argument("-o", required=True, help="submission folder to create")
    p.add_argument("--layout", required=True, choices=["nnunet", *LAYOUTS],
                   help="the challenge's input/output layout (nnunet: CASE_XXXX files in, the model's labels out)")
    p.add_argument("--info", help="nnUNetv2_find_best_configuration's inference_information.json (default: the "
                                  "dataset's in nnUNet_results); its models, folds and postprocessing are used")
    p.add_argument("--no-postprocessing", action="store_true", help="leave out the selected postprocessing")
    p.add_argument("-tr", nargs="+", help="instead of --info: trainers (with -c, every pair is an ensemble member)")
    p.add_argument("-c", nargs="+", help="configurations, with -tr")
    p.add_argument("-p", default="nnUNetPlans", help="plans identifier, with -tr (default: nnUNetPlans)")
    p.add_argument("-f", nargs="+", default=["0", "1", "2", "3", "4"], help="folds, with -tr (default: 0 1 2 3 4)")
    p.add_argument("-pp_pkl_file", help="postprocessing.pkl, with -tr (default: none)")
    p.add_argument("-chk", default="checkpoint_final.pth", help="checkpoint file name (default: checkpoint_final.pth)")
    p.set_defaults(func=build_command)


COMMANDS = (_add_env, _add_verify, _add_plans, _add_demo, _add_phantom, _add_convert, _add_evaluate, _add_predict,
            _add_evaluate_missing, _add_attention_maps, _add_mkd_prepare, _add_benchmark, _add_submission)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnunet-mm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for add_command in COMMANDS:
        add_command(sub)
    return parser


def command_name(args) -> str:
    sub = getattr(args, "benchmark", None) or getattr(args, "submission", None)
    return f"{args.command} {sub}" if sub else args.command


def main(argv: list[str] | None = None) -> int:
    """Exit 2 with one line for a user error, 1 with the traceback for a bug."""
    args = build_parser().parse_args(argv)
    args.command_line = shlex.join(["nnunet-mm", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except Exception as e:
        if not is_user_error(e):
            raise
        print(f"nnunet-mm {command_name(args)}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
