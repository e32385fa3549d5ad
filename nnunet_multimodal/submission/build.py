"""``nnunet-mm submission build``: a self-contained submission folder from trained models.

The folder holds the selected models (nnU-Net results folders reduced to plans, dataset.json, fingerprint and
the checkpoints of the selected folds), the selected postprocessing, this plugin's source as an installable
package, requirements pinned to the building environment's versions, a Dockerfile and ``run_submission.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

RUNNER_SCRIPT = "run_submission.py"
RUNNER_TEXT = '''#!/usr/bin/env python3
"""Runs this submission (written by `nnunet-mm submission build`): -i INPUT in the challenge layout,
-o OUTPUT for the predictions (defaults /input and /output). See submission.json for what it holds."""

import sys
from pathlib import Path

from nnunet_multimodal.submission.runner import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], Path(__file__).resolve().parent))
'''
CONTAINER_ROOT = "/opt/submission"


@dataclass(frozen=True)
class ModelSource:
    folder: Path                # a results folder Trainer__Plans__Configuration
    folds: tuple
    checkpoint: str = "checkpoint_final.pth"


def selection_from_inference_information(info_file: Path, dataset_folder: Path, checkpoint: str,
                                         postprocessing: bool) -> tuple[list[ModelSource], Path | None, dict]:
    """The models, folds and postprocessing that ``nnUNetv2_find_best_configuration`` selected; the models
    are looked up in ``dataset_folder`` (the dataset's folder in nnUNet_results), wherever the file lies."""
    if not info_file.is_file():
        raise FileNotFoundError(f"{info_file} is missing: run nnUNetv2_find_best_configuration first, or name "
                                f"the model with -tr/-c/-p/-f")
    try:
        info = json.loads(info_file.read_text())
        best = info["best_model_or_ensemble"]
        models = [ModelSource(dataset_folder / f"{m['trainer']}__{m['plans_identifier']}__{m['configuration']}",
                              tuple(info["folds"]), checkpoint) for m in best["selected_model_or_models"]]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{info_file} is no inference_information.json of nnUNetv2_find_best_configuration "
                         f"({type(e).__name__}: {e}); rerun it, or name the model with -tr/-c/-p/-f") from e
    pp_file = None
    if postprocessing:
        pp_file = Path(best["postprocessing_file"])
        if not pp_file.is_file() and dataset_folder.name in pp_file.parts:
            # the results folder moved since find_best_configuration: the same file under this dataset folder
            pp_file = dataset_folder.joinpath(*pp_file.parts[pp_file.parts.index(dataset_folder.name) + 1:])
        if not pp_file.is_file():
            raise FileNotFoundError(f"{best['postprocessing_file']} (postprocessing selected in {info_file}) is "
                                    f"missing: rerun nnUNetv2_find_best_configuration or pass --no-postprocessing")
    note = {"selected_by": str(info_file),
            "cross_validation_dice": {"before_postprocessing": best.get("result_on_crossval_pre_pp"),
                                      "after_postprocessing": best.get("result_on_crossval_post_pp")}}
    return models, pp_file, note


def model_stages(model: ModelSource) -> list[ModelSource]:
    """The model, then for a cascade stage the stages it predicts from (the runner predicts them first, with the
    same modalities): results folders of the same trainer and plans, as nnU-Net trains a cascade, with the same
    folds. A previous stage's folder that is not there raises FileNotFoundError naming the training to run."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    stages = [model]
    while (stages[-1].folder / "plans.json").is_file():
        folder = stages[-1].folder
        trainer, plans, configuration = folder.name.split("__")
        previous = PlansManager(str(folder / "plans.json")).get_configuration(configuration).previous_stage_name
        if previous is None:
            break
        previous_folder = folder.with_name(f"{trainer}__{plans}__{previous}")
        if not previous_folder.is_dir():
            raise FileNotFoundError(f"{previous_folder} is missing: {folder.name} is a cascade stage and the "
                                    f"submission predicts its previous stage {previous} too; train it "
                                    f"(nnUNetv2_train {folder.parent.name} {previous} FOLD -tr {trainer} -p {plans})")
        stages.append(ModelSource(previous_folder, model.folds, model.checkpoint))
    return stages


def check_models(models: list[ModelSource], layout_name: str) -> dict:
    """The models' shared dataset.json after checking files, configurations and the layout fit."""
    from nnunet_multimodal.data.convert.layouts import LAYOUTS, model_fits_layout
    from nnunet_multimodal.evaluation.evaluate import read_dataset_json
    from nnunet_multimodal.training.checkpointing import read_checkpoint

    dataset_jsons = []
    for model in models:
        for stage in model_stages(model):
            for required in ("plans.json", "dataset.json"):
                if not (stage.folder / required).is_file():
                    raise FileNotFoundError(f"{stage.folder / required} is missing: is {stage.folder} a trained "
                                            f"nnU-Net results folder (Trainer__Plans__Configuration)?")
            for fold in stage.folds:
                checkpoint = stage.folder / f"fold_{fold}" / stage.checkpoint
                if not checkpoint.is_file():
                    raise FileNotFoundError(f"{checkpoint} is missing: train fold {fold} or select other folds (-f)")
                read_checkpoint(checkpoint)  # a truncated file would be packaged and fail only where the bundle runs
        dataset_jsons.append(read_dataset_json(model.folder / "dataset.json"))
    keys = ("channel_names", "labels", "regions_class_order", "file_ending")
    for model, dataset_json in zip(models[1:], dataset_jsons[1:]):
        if any(dataset_json.get(k) != dataset_jsons[0].get(k) for k in keys):
            raise ValueError(f"{model.folder} and {models[0].folder} differ in dataset.json {keys}: an ensemble "
                             f"needs models of one dataset")
    if layout_name in LAYOUTS:
        problems = model_fits_layout(LAYOUTS[layout_name], dataset_jsons[0])
        if problems:
            raise ValueError(f"the model does not fit the {layout_name} layout: " + "; ".join(problems)
                             + ". Train on data converted with `nnunet-mm convert`, or build with --layout nnunet")
    return dataset_jsons[0]


def installed_version(distribution: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


PYTORCH_INDEX = "https://download.pytorch.org/whl/{build}"


def pin(name: str, version: str) -> tuple[str, str | None]:
    """``name==version`` and the package index it needs, if any. A CUDA or ROCm build of PyTorch (``+cu130``,
    ``+rocm6.4``) keeps its local tag and gets PyTorch's index for that build: its CUDA runtime packages are pinned
    too, and PyPI's build of the same version may need other ones. Other local tags (``+cpu``) are dropped, so the
    container gets PyPI's build, which also runs on a GPU."""
    public, _, local = version.partition("+")
    if local.startswith(("cu", "rocm")):
        return f"{name}=={version}", PYTORCH_INDEX.format(build=local)
    return f"{name}=={public}", None


def pinned_requirements(root: str = "nnunet-multimodal") -> list[str]:
    """requirements.txt lines: ``name==version`` for every installed distribution that ``root`` needs,
    transitively (extras left out), after an ``--extra-index-url`` line for each PyTorch build index they need."""
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins, indexes, queue, seen = {}, set(), [root], set()
    while queue:
        name = canonicalize_name(queue.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue        # not needed on this platform (its marker was false when it was installed)
        if name != canonicalize_name(root):
            pins[name], index = pin(dist.metadata["Name"], dist.version)
            indexes.update([index] if index else [])
        for line in dist.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                queue.append(requirement.name)
    return [f"--extra-index-url {index}" for index in sorted(indexes)] + [pins[k] for k in sorted(pins)]


def plugin_packages() -> dict[str, Path]:
    """Every package of the installed plugin and its folder (editable installs map trainers/ and plans/)."""
    from importlib.resources import files

    packages = {}
    for mapped in ("nnunet_multimodal", "nnunet_multimodal.trainers", "nnunet_multimodal.plans"):
        top = Path(str(files(mapped)))
        for folder, dirs, names in os.walk(top, followlinks=True):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            if "__init__.py" in names:
                relative = Path(folder).relative_to(top).parts
                packages.setdefault(".".join((mapped, *relative)), Path(folder))
    return packages


def vendor_plugin(target: Path) -> None:
    """The installed plugin's modules (and plans' data files) as a pip-installable source tree."""
    from nnunet_multimodal import __version__

    packages = plugin_packages()
    for package, folder in packages.items():
        destination = target.joinpath(*package.split("."))
        destination.mkdir(parents=True, exist_ok=True)
        patterns = ("*.py", "*.md", "*.json") if package == "nnunet_multimodal.plans" else ("*.py",)
        for pattern in patterns:
            for source in sorted(folder.glob(pattern)):
                shutil.copyfile(source, destination / source.name)
    package_list = ",\n".join(f'    "{p}"' for p in sorted(packages))
    (target / "pyproject.toml").write_text(f'''# Written by nnunet-mm submission build: the building environment's
# nnunet-multimodal {__version__}. Its dependencies are pinned in ../requirements.txt (install this with --no-deps).
[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = "nnunet-multimodal"
version = "{__version__}"
requires-python = ">=3.10"

[project.scripts]
nnunet-mm = "nnunet_multimodal.cli:main"

[tool.setuptools]
packages = [
{package_list},
]

[tool.setuptools.package-data]
"nnunet_multimodal.plans" = ["*.md", "*.json"]
''')


def dockerfile_text() -> str:
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    return f"""# Written by nnunet-mm submission build. Build: docker build -t NAME .
# Run: docker run --gpus all -v IN:/input:ro -v OUT:/output NAME   (uses the GPU when torch sees one)
FROM python:{python}-slim
ENV PYTHONUNBUFFERED=1
WORKDIR {CONTAINER_ROOT}
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt
COPY plugin/ plugin/
RUN pip install --no-cache-dir --no-deps ./plugin
COPY model/ model/
COPY submission.json {RUNNER_SCRIPT} ./
ENTRYPOINT ["python", "{CONTAINER_ROOT}/{RUNNER_SCRIPT}"]
CMD ["-i", "/input", "-o", "/output"]
"""


def copy_model(model: ModelSource, target: Path) -> None:
    target.mkdir(parents=True)
    for name in ("plans.json", "dataset.json", "dataset_fingerprint.json"):
        if (model.folder / name).is_file():
            shutil.copyfile(model.folder / name, target / name)
    for fold in model.folds:
        (target / f"fold_{fold}").mkdir()
        shutil.copyfile(model.folder / f"fold_{fold}" / model.checkpoint, target / f"fold_{fold}" / model.checkpoint)


def build_submission(output: str | Path, layout_name: str, models: list[ModelSource],
                     postprocessing_file: Path | None = None, note: dict | None = None) -> Path:
    """Write the submission folder ``output`` (which must not exist); nothing is left behind on failure."""
    from nnunet_multimodal.submission.runner import LAYOUT_CHOICES, ModelEntry, Submission

    if layout_name not in LAYOUT_CHOICES:
        raise ValueError(f"unknown layout {layout_name!r}; choose one of {list(LAYOUT_CHOICES)}")
    if not models:
        raise ValueError("no model selected")
    output = Path(output)
    if output.exists():
        raise FileExistsError(f"{output} exists; choose a new folder for the submission")
    check_models(models, layout_name)
    staging = output.with_name(f".{output.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        entries = []
        for model in models:
            for stage in model_stages(model):  # previous stages beside their cascade, where the runner looks
                relative = Path("model") / stage.folder.parent.name / stage.folder.name
                if not (staging / relative).exists():  # an ensemble may hold a cascade and its previous stage
                    copy_model(stage, staging / relative)
            relative = Path("model") / model.folder.parent.name / model.folder.name
            entries.append(ModelEntry(relative.as_posix(), model.folds, model.checkpoint))
        postprocessing = None
        if postprocessing_file is not None:
            postprocessing = "model/postprocessing.pkl"
            shutil.copyfile(postprocessing_file, staging / postprocessing)
        vendor_plugin(staging / "plugin")
        versions = {name: installed_version(name) for name in ("nnunet-multimodal", "nnunetv2", "torch")}
        pins = pinned_requirements()
        (staging / "requirements.txt").write_text(
            f"# Pinned by nnunet-mm submission build from the environment that built it (Python "
            f"{sys.version.split()[0]}).\n# nnunet-multimodal {versions['nnunet-multimodal']} itself is installed "
            f"from plugin/.\n" + "\n".join(pins) + "\n")
        (staging / "Dockerfile").write_text(dockerfile_text())
        (staging / RUNNER_SCRIPT).write_text(RUNNER_TEXT)
        submission = Submission(staging, layout_name, tuple(entries), postprocessing)
        (staging / "submission.json").write_text(submission.to_json(built_with=versions, **(note or {})))
        staging.rename(output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output


def build_command(args) -> int:
    """``nnunet-mm submission build`` (arguments defined in nnunet_multimodal/cli.py)."""
    from nnunet_multimodal.environment import dataset_folder as find_dataset_folder

    dataset_folder = find_dataset_folder(args.d, "nnUNet_results")
    if args.tr:
        if not args.c:
            raise ValueError("-tr needs -c (the configurations to package)")
        if args.info or args.no_postprocessing:
            raise ValueError("--info and --no-postprocessing select from nnUNetv2_find_best_configuration's output; "
                             "with -tr, give the postprocessing with -pp_pkl_file (or leave it out)")
        folds = tuple(f if f == "all" else int(f) for f in args.f)
        models = [ModelSource(dataset_folder / f"{t}__{args.p}__{c}", folds, args.chk) for t in args.tr for c in args.c]
        postprocessing = Path(args.pp_pkl_file) if args.pp_pkl_file else None
        note = {"selected_by": "-tr " + " ".join(args.tr) + " -c " + " ".join(args.c) + f" -p {args.p}"}
    else:
        ignored = [flag for flag, value in (("-c", args.c), ("-pp_pkl_file", args.pp_pkl_file)) if value]
        if ignored:
            raise ValueError(f"{' and '.join(ignored)} select models with -tr; without -tr the models, folds and "
                             f"postprocessing come from nnUNetv2_find_best_configuration's inference_information.json")
        info = Path(args.info) if args.info else dataset_folder / "inference_information.json"
        models, postprocessing, note = selection_from_inference_information(info, dataset_folder, args.chk,
                                                                            not args.no_postprocessing)
    output = build_submission(args.o, args.layout, models, postprocessing, note)
    print(f"wrote {output}: {len(models)} model(s) ({', '.join(m.folder.name for m in models)}), folds "
          f"{list(models[0].folds)}, postprocessing {'yes' if postprocessing else 'no'}, layout {args.layout}")
    print(f"try it: python {output / RUNNER_SCRIPT} -i INPUT -o OUTPUT; container: docker build -t NAME {output}")
    return 0
