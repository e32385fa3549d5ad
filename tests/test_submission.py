"""Challenge submissions: the layout table shared with the converters, `nnunet-mm submission build`, the runner
on synthetic and real challenge folders, and nnU-Net's model zip export/install with our trainers."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import (
    BRATS_ID,
    CMSAD_DROPOUT_TRAINER,
    CMSAD_TRAINER,
    DATASET_ID,
    PLAIN_TRAINER,
    SHARED,
    TINY_PLANS,
    nnunet_predict,
    run_tool,
    write_nan_voxels,
)

from nnunet_multimodal.cli import main
from nnunet_multimodal.data.convert.layouts import LAYOUTS, model_fits_layout
from nnunet_multimodal.data.phantoms import REGION_STYLE_LABELS
from nnunet_multimodal.inference.output_folder import MANIFEST
from nnunet_multimodal.submission import runner
from nnunet_multimodal.submission.build import pin, pinned_requirements
from nnunet_multimodal.submission.runner import CaseError, InputCase, check_channels, find_cases, stage_case

needs_shared = pytest.mark.skipif(not (SHARED / "data").is_dir(), reason="../shared/data is absent (users' clones)")


def array(path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    return (a.GetSize() == b.GetSize() and np.allclose(a.GetSpacing(), b.GetSpacing())
            and np.allclose(a.GetOrigin(), b.GetOrigin())
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-6))


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


# --- the layout table ---------------------------------------------------------------------------------------

def test_layout_scan_finds_cases_missing_and_extra_files(tmp_path):
    brats = tmp_path / "brats2023"
    for key in ("t1n", "t1c", "t2w", "t2f", "seg"):
        touch(brats / "BraTS-GLI-00000-000" / f"BraTS-GLI-00000-000-{key}.nii.gz")
    for key in ("t1n", "t1c", "t2f", "t1n_copy"):
        touch(brats / "BraTS-GLI-00001-000" / f"BraTS-GLI-00001-000-{key}.nii.gz")
    touch(brats / "notes" / "README.txt")
    cases, unrecognised = LAYOUTS["brats2023"].scan(brats)
    assert [c.case for c in cases] == ["BraTS-GLI-00000-000", "BraTS-GLI-00001-000"]
    complete, partial = cases
    assert [p.name[-10:] for p in complete.channels] == ["t1n.nii.gz", "t1c.nii.gz", "t2w.nii.gz", "t2f.nii.gz"]
    # the label is no extra
    assert complete.extra == ()
    assert complete.label.name == "BraTS-GLI-00000-000-seg.nii.gz"
    assert partial.missing() == [2]
    assert [p.name for p in partial.extra] == ["BraTS-GLI-00001-000-t1n_copy.nii.gz"]
    assert [u.folder.name for u in unrecognised] == ["notes"]
    out = tmp_path / "out"
    assert LAYOUTS["brats2023"].prediction_path(out, complete) == out / "BraTS-GLI-00000-000.nii.gz"

    touch(tmp_path / "brats" / "C1" / "C1_t1ce.nii.gz")                 # t1 is a prefix of t1ce
    (case,), _ = LAYOUTS["brats"].scan(tmp_path / "brats")
    assert case.missing() == [0, 2, 3]

    session = tmp_path / "isles" / "rawdata" / "sub-1" / "ses-1"
    for name in ("dwi.nii.gz", "dwi.json", "adc.nii.gz", "flair.nii.gz"):
        touch(session / f"sub-1_ses-1_{name}")
    (case,), _ = LAYOUTS["isles22"].scan(tmp_path / "isles")
    # JSON sidecars are allowed
    assert case.extra == ()
    assert case.missing() == []
    assert case.label == tmp_path / "isles/derivatives/sub-1/ses-1/sub-1_ses-1_msk.nii.gz"
    assert LAYOUTS["isles22"].prediction_path(tmp_path, case) == tmp_path / "sub-1/ses-1/sub-1_ses-1_msk.nii.gz"


def test_generic_layout_ignores_hidden_files_and_names_stray_ones(tmp_path):
    for name in ("CASE_001_0000.nii.gz", "CASE_001_0001.nii.gz", ".DS_Store", "notes.txt"):
        touch(tmp_path / "in" / name)
    cases, failures = find_cases("nnunet", tmp_path / "in", tmp_path / "out", 2, ".nii.gz")
    assert [c.name for c in cases] == ["CASE_001"]
    assert list(failures) == ["notes.txt"]


def test_output_labels_invert_the_converters_label_maps():
    from nnunetv2.dataset_conversion.Dataset137_BraTS21 import convert_labels_back_to_BraTS

    nnunet_values = np.arange(4)
    assert np.array_equal(runner.label_lookup(LAYOUTS["brats"])[nnunet_values],
                          convert_labels_back_to_BraTS(nnunet_values))
    assert np.array_equal(runner.label_lookup(LAYOUTS["brats2023"])[nnunet_values], nnunet_values)
    for layout in LAYOUTS.values():
        lut = runner.label_lookup(layout)
        for challenge_value, nnunet_value in (layout.label_map or {}).items():
            assert lut[nnunet_value] == challenge_value or challenge_value == 421   # 421 is MM-WHS's alias of 420


def test_model_must_fit_the_layout():
    phantom_brats = {"channel_names": {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"},
                     "labels": REGION_STYLE_LABELS, "regions_class_order": [1, 2, 3]}
    assert model_fits_layout(LAYOUTS["brats"], phantom_brats) == []          # names compared case-insensitively
    channels, labels = model_fits_layout(LAYOUTS["brats2023"], phantom_brats)
    # BraTS 2023's tumour core differs
    assert "['T1', 'T1C', 'T2W', 'T2F']" in channels
    assert "(1, 3)" in labels
    plain = {"channel_names": {"0": "T2W", "1": "ADC", "2": "HBV"}, "labels": {"background": 0, "csPCa": 1, "x": 2}}
    (problem,) = model_fits_layout(LAYOUTS["picai"], plain)
    assert "[1, 2]" in problem
    assert "[1]" in problem


def test_channel_rules_per_case(tmp_path):
    files = [tmp_path / f"C_{k}.mha" for k in ("t2w", "adc", "hbv")]
    names = ["T2W", "ADC", "HBV"]
    without_hbv = InputCase("C", tmp_path / "C.mha", {0: files[0], 1: files[1]}, tuple(files))
    with pytest.raises(CaseError, match=r"C_hbv.mha \(HBV\) missing; this model was not trained for missing"):
        check_channels(without_hbv, names, trained_for_missing=False, reference_required=True)
    check_channels(without_hbv, names, trained_for_missing=True, reference_required=True)
    without_t2w = InputCase("C", tmp_path / "C.mha", {1: files[1], 2: files[2]}, tuple(files))
    with pytest.raises(CaseError, match="C_t2w.mha .T2W. is missing: it is the reference grid"):
        check_channels(without_t2w, names, trained_for_missing=True, reference_required=True)
    check_channels(without_t2w, names, trained_for_missing=True, reference_required=False)   # co-registered (BraTS)
    with pytest.raises(CaseError, match="no channel file found"):
        check_channels(InputCase("C", tmp_path, {}, tuple(files)), names, True, False)
    with pytest.raises(CaseError, match="remove it"):
        check_channels(InputCase("C", tmp_path, {0: files[0]}, tuple(files), ("x.nii.gz ...; remove it",)), names,
                       True, False)


def write_volume(values: np.ndarray, path: Path, spacing=(1.0, 1.0, 1.0)) -> None:
    image = sitk.GetImageFromArray(values)
    image.SetSpacing(spacing)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


def test_brats2023_case_staged_in_channel_order(tmp_path):
    rng = np.random.default_rng(0)
    keys = ("t1n", "t1c", "t2w", "t2f")
    volumes = {k: rng.random((4, 6, 6)).astype(np.float32) for k in keys}
    for k in keys:
        write_volume(volumes[k], tmp_path / "in" / "BraTS-GLI-00007-000" / f"BraTS-GLI-00007-000-{k}.nii.gz")
    (case,), failures = find_cases("brats2023", tmp_path / "in", tmp_path / "out", 4, ".nii.gz")
    assert failures == {}
    assert case.output == tmp_path / "out" / "BraTS-GLI-00007-000.nii.gz"
    staged = stage_case(case, tmp_path / "staging", "case00000", ".nii.gz")
    assert [p.name for p in staged.values()] == [f"case00000_{c:04d}.nii.gz" for c in range(4)]
    for channel, key in enumerate(keys):
        assert np.array_equal(array(staged[channel]), volumes[key])


def test_brats2024_prediction_keeps_the_case_name_and_the_labels(tmp_path):
    for key in ("t1n", "t1c", "t2w", "t2f", "seg"):
        touch(tmp_path / "in" / "BraTS-GLI-02000-100" / f"BraTS-GLI-02000-100-{key}.nii.gz")
    (case,), failures = find_cases("brats2024", tmp_path / "in", tmp_path / "out", 4, ".nii.gz")
    assert failures == {}
    # the 2024 validation matches a prediction to its case by the name's end, (\d{5}-\d{3})\.nii\.gz
    assert case.output == tmp_path / "out" / "BraTS-GLI-02000-100.nii.gz"
    assert runner.label_lookup(LAYOUTS["brats2024"]).tolist() == [0, 1, 2, 3, 4]


def test_only_a_brats2024_model_fits_the_brats2024_layout():
    channels = {"0": "T1", "1": "T1C", "2": "T2W", "3": "T2F"}
    converted_2024 = {"channel_names": channels, "regions_class_order": [2, 2, 1, 1, 3, 4],
                      "labels": {"background": 0, "WT": [1, 2, 3], "SNFH": [2], "TC": [1, 3], "NETC": [1],
                                 "ET": [3], "RC": [4]}}
    converted_2023 = {"channel_names": channels, "regions_class_order": [2, 1, 3],
                      "labels": {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [1, 3],
                                 "enhancing tumor": [3]}}
    assert model_fits_layout(LAYOUTS["brats2024"], converted_2024) == []
    (problem,) = model_fits_layout(LAYOUTS["brats2024"], converted_2023)
    assert "(4,)" in problem
    (problem,) = model_fits_layout(LAYOUTS["brats2023"], converted_2024)
    assert "[2, 2, 1, 1, 3, 4]" in problem


# --- real challenge cases (../shared/data) -----------------------------------------------------------------

@needs_shared
def test_real_picai_case_staged_and_written_on_the_t2w_grid(tmp_path):
    cases, failures = find_cases("picai", SHARED / "data" / "prostatex", tmp_path / "out", 3, ".nii.gz")
    assert failures == {}
    assert [c.name for c in cases] == ["ProstateX-0000_07-07-2011", "ProstateX-0001_07-08-2011"]
    case = cases[0]
    t2w = sitk.ReadImage(str(case.channels[0]))
    staged = stage_case(case, tmp_path / "staging", "case00000", ".nii.gz")
    for path in staged.values():                         # ADC and HBV (2 mm grid) resampled onto T2W
        assert same_grid(sitk.ReadImage(str(path)), t2w)
    adc = array(staged[1])
    segmentation = sitk.GetImageFromArray(((adc > 0) & (adc < np.percentile(adc[adc > 0], 5))).astype(np.uint8))
    segmentation.CopyInformation(sitk.ReadImage(str(staged[1])))
    sitk.WriteImage(segmentation, str(tmp_path / "case00000.nii.gz"))
    runner.write_output(tmp_path / "case00000.nii.gz", case.output, None, runner.label_lookup(LAYOUTS["picai"]))
    assert case.output == tmp_path / "out" / "ProstateX-0000_07-07-2011.mha"
    written = sitk.ReadImage(str(case.output))
    assert same_grid(written, t2w)
    assert np.array_equal(sitk.GetArrayFromImage(written), sitk.GetArrayFromImage(segmentation))


@needs_shared
def test_real_isles22_case_written_where_its_mask_lives(tmp_path):
    root = SHARED / "data" / "isles22"
    (case,), failures = find_cases("isles22", root, tmp_path / "out", 3, ".nii.gz")
    assert failures == {}
    assert case.name == "sub-strokecase0009_ses-0001"
    mask = root / "derivatives" / "sub-strokecase0009" / "ses-0001" / "sub-strokecase0009_ses-0001_msk.nii.gz"
    assert case.output.relative_to(tmp_path / "out") == mask.relative_to(root / "derivatives")
    staged = stage_case(case, tmp_path / "staging", "case00000", ".nii.gz")
    dwi = sitk.ReadImage(str(case.channels[0]))
    assert all(same_grid(sitk.ReadImage(str(p)), dwi) for p in staged.values())   # FLAIR resampled onto DWI
    runner.write_output(mask, case.output, None, runner.label_lookup(LAYOUTS["isles22"]))
    assert same_grid(sitk.ReadImage(str(case.output)), dwi)
    assert np.array_equal(array(case.output), array(mask))
    assert array(case.output).sum() == 523


# --- nnU-Net's model zip with our trainers -----------------------------------------------------------------

def test_zip_export_install_and_predict(workspace, phantom_dataset, trained_cmsad_model, reference_predictions,
                                        tmp_path):
    archive = tmp_path / "cmsad.zip"
    run_tool(["nnUNetv2_export_model_to_zip", "-d", DATASET_ID, "-o", archive, "-c", "2d", "-tr", CMSAD_TRAINER,
              "-p", TINY_PLANS, "-f", "0"], workspace.env)
    fresh = dict(workspace.env, nnUNet_results=str(tmp_path / "results"))
    run_tool(["nnUNetv2_install_pretrained_model_from_zip", archive], fresh)
    installed = tmp_path / "results" / phantom_dataset.name / trained_cmsad_model.parent.name / "fold_0"
    checkpoint = "checkpoint_final.pth"
    assert (installed / checkpoint).read_bytes() == (trained_cmsad_model / checkpoint).read_bytes()
    run_tool(["nnUNetv2_predict", "-i", phantom_dataset / "imagesTs", "-o", tmp_path / "pred", "-d", DATASET_ID, "-c",
              "2d", "-f", "0", "-tr", CMSAD_TRAINER, "-p", TINY_PLANS, "-device", "cpu", "-npp", "1", "-nps", "1",
              "--disable_progress_bar"], fresh)
    for case in sorted(p.name for p in (phantom_dataset / "labelsTs").iterdir()):
        assert np.array_equal(array(tmp_path / "pred" / case),
                              array(reference_predictions / trained_cmsad_model.parent.name / case))


# --- submission build and runner ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def inference_information(workspace, phantom_dataset, trained_cmsad_model, trained_plain_model) -> Path:
    """find_best_configuration over the two fixture models. Always run: other tests run it over other models, and
    nnU-Net keeps one inference_information.json per dataset."""
    run_tool(["nnUNetv2_find_best_configuration", DATASET_ID, "-c", "2d", "-tr", CMSAD_TRAINER, PLAIN_TRAINER,
              "-p", TINY_PLANS, "-f", "0", "-np", "1"], workspace.env)
    return workspace.results / phantom_dataset.name / "inference_information.json"


@pytest.fixture(scope="module")
def generic_submission(workspace, inference_information, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("submission") / "phantom"
    with pytest.MonkeyPatch.context() as mp:
        for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
            mp.setenv(name, workspace.env[name])
        assert main(["submission", "build", "-d", str(DATASET_ID), "--layout", "nnunet", "-o", str(folder)]) == 0
    return folder


def test_find_best_configuration_selects_among_cmsad_and_plain_nnunet(inference_information):
    info = json.loads(inference_information.read_text())
    assert "best_model_or_ensemble" in info


def test_build_takes_the_models_from_the_dataset_wherever_the_selection_file_lies(workspace, inference_information,
                                                                                   nnunet_paths, tmp_path, capsys):
    moved = tmp_path / "kept_elsewhere.json"
    shutil.copy(inference_information, moved)
    common = ["submission", "build", "-d", str(DATASET_ID), "--layout", "nnunet"]
    assert main([*common, "-o", str(tmp_path / "s"), "--info", str(moved)]) == 0
    spec = json.loads((tmp_path / "s" / "submission.json").read_text())
    best = json.loads(inference_information.read_text())["best_model_or_ensemble"]
    assert len(spec["models"]) == len(best["selected_model_or_models"])
    assert main([*common, "-o", str(tmp_path / "t"), "-c", "2d"]) == 2
    assert "-c select models with -tr" in capsys.readouterr().err
    assert main([*common, "-o", str(tmp_path / "u"), "-tr", CMSAD_TRAINER, "-c", "2d", "--no-postprocessing"]) == 2
    assert "with -tr, give the postprocessing with -pp_pkl_file" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()
    assert not (tmp_path / "u").exists()


def test_runner_with_a_corrupt_checkpoint_names_it_and_exits_2(generic_submission, phantom_dataset, tmp_path, capsys):
    submission = tmp_path / "submission"
    shutil.copytree(generic_submission, submission)
    checkpoint = next(submission.rglob("checkpoint_final.pth"))
    checkpoint.write_bytes(checkpoint.read_bytes()[:4096])
    assert runner.main(["-i", str(phantom_dataset / "imagesTs"), "-o", str(tmp_path / "out"), "-device", "cpu"],
                       submission) == 2
    error = capsys.readouterr().err
    assert f"{checkpoint.relative_to(submission)} is unreadable" in error
    assert "Traceback" not in error


def test_runner_names_a_checkpoint_of_an_unknown_trainer(generic_submission, phantom_dataset, tmp_path, capsys):
    import torch

    submission = shutil.copytree(generic_submission, tmp_path / "submission")
    checkpoint = next(submission.rglob("checkpoint_final.pth"))
    torch.save(dict(torch.load(checkpoint, weights_only=False), trainer_name="nnUNetTrainerNotShipped"), checkpoint)
    assert runner.main(["-i", str(phantom_dataset / "imagesTs"), "-o", str(tmp_path / "out"), "-device", "cpu"],
                       submission) == 2
    assert "was trained with nnUNetTrainerNotShipped, which neither nnU-Net nor" in capsys.readouterr().err


def test_runner_names_a_malformed_submission_json(tmp_path, capsys):
    (tmp_path / "submission.json").write_text(json.dumps({"layout": "nnunet", "models": [{"folder": "m"}]}))
    assert runner.main(["-i", str(tmp_path), "-o", str(tmp_path / "out"), "-device", "cpu"], tmp_path) == 2
    assert f"{tmp_path / 'submission.json'} is no submission.json" in capsys.readouterr().err


def test_runner_keeps_the_traceback_of_a_bug(tmp_path, monkeypatch):
    (tmp_path / "submission.json").write_text(json.dumps({"layout": "nnunet", "models": []}))

    def broken(*args, **kwargs):
        return {}["missing key"]

    monkeypatch.setattr(runner, "run_submission", broken)
    with pytest.raises(KeyError):
        runner.main(["-i", str(tmp_path), "-o", str(tmp_path / "out"), "-device", "cpu"], tmp_path)


def test_build_refuses_a_checkpoint_that_does_not_load(trained_cmsad_model, tmp_path):
    from nnunet_multimodal.submission.build import ModelSource, build_submission
    from nnunet_multimodal.training.checkpointing import CheckpointError

    model = shutil.copytree(trained_cmsad_model.parent, tmp_path / "results" / trained_cmsad_model.parent.name,
                            ignore=shutil.ignore_patterns("validation"))
    checkpoint = model / "fold_0" / "checkpoint_final.pth"
    checkpoint.write_bytes(checkpoint.read_bytes()[:4096])
    with pytest.raises(CheckpointError, match=f"{checkpoint} is unreadable"):
        build_submission(tmp_path / "submission", "nnunet", [ModelSource(model, (0,))])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]


def test_runner_refuses_an_output_folder_inside_the_input(generic_submission, phantom_dataset, tmp_path, capsys):
    images = shutil.copytree(phantom_dataset / "imagesTs", tmp_path / "in")
    assert runner.main(["-i", str(images), "-o", str(images / "out"), "-device", "cpu"], generic_submission) == 2
    assert f"-o {images / 'out'} is the input folder or inside it" in capsys.readouterr().err
    assert not (images / "out").exists()


def test_runner_refuses_output_files_it_did_not_write(generic_submission, phantom_dataset, tmp_path, capsys):
    output = shutil.copytree(phantom_dataset / "labelsTs", tmp_path / "out")
    labels = {p.name: p.read_bytes() for p in output.iterdir()}
    assert runner.main(["-i", str(phantom_dataset / "imagesTs"), "-o", str(output), "-device", "cpu"],
                       generic_submission) == 2
    error = capsys.readouterr().err
    assert f"{len(labels)} file(s) that this run would replace" in error
    assert "pass --overwrite" in error
    assert {p.name: p.read_bytes() for p in output.iterdir()} == labels


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return [tuple(line.split(None, 1)) for line in lines]


def test_a_cuda_build_of_torch_keeps_its_tag_and_gets_pytorchs_index():
    assert pin("torch", "2.11.0+cu130") == ("torch==2.11.0+cu130", "https://download.pytorch.org/whl/cu130")


def test_a_rocm_build_of_torch_gets_pytorchs_rocm_index():
    assert pin("torch", "2.9.1+rocm6.4") == ("torch==2.9.1+rocm6.4", "https://download.pytorch.org/whl/rocm6.4")


def test_a_cpu_build_gets_pypis_build_which_also_runs_on_a_gpu():
    assert pin("torch", "2.14.1+cpu") == ("torch==2.14.1", None)


def test_pypis_own_builds_need_no_other_index():
    assert pin("nnunetv2", "2.8.1") == ("nnunetv2==2.8.1", None)


def test_a_cuda_tagged_torch_puts_its_index_first_in_the_requirements(monkeypatch):
    from importlib import metadata

    real = metadata.distribution

    def cuda_torch(name):
        dist = real(name)
        if name != "torch":
            return dist
        return SimpleNamespace(metadata={"Name": "torch"}, version=f"{dist.version}+cu130", requires=dist.requires)

    monkeypatch.setattr(metadata, "distribution", cuda_torch)
    lines = pinned_requirements()
    assert lines[0] == "--extra-index-url https://download.pytorch.org/whl/cu130"
    assert f"torch=={real('torch').version}+cu130" in lines


def test_submission_folder_dockerfile_and_pins(generic_submission, inference_information):
    from importlib.metadata import version

    instructions = dockerfile_instructions(generic_submission / "Dockerfile")
    keywords = [k for k, _ in instructions]
    assert keywords[0] == "FROM"
    assert instructions[0][1] == f"python:{sys.version_info[0]}.{sys.version_info[1]}-slim"
    runs = [arg for k, arg in instructions if k == "RUN"]
    assert runs == ["pip install --no-cache-dir -r requirements.txt", "pip install --no-cache-dir --no-deps ./plugin"]
    for key, arg in instructions:
        if key == "COPY":
            *sources, _ = arg.split()
            assert all((generic_submission / s).exists() for s in sources), arg
    workdir = dict(instructions)["WORKDIR"]
    entry = json.loads(dict(instructions)["ENTRYPOINT"])
    assert entry[0] == "python"
    assert Path(entry[1]) == Path(workdir) / "run_submission.py"
    assert json.loads(dict(instructions)["CMD"]) == ["-i", "/input", "-o", "/output"]

    lines = [line for line in (generic_submission / "requirements.txt").read_text().splitlines() if line[:1] != "#"]
    pins = [line for line in lines if not line.startswith("--extra-index-url ")]
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[^=\s]+", p) for p in pins), pins
    assert f"nnunetv2=={version('nnunetv2')}" in pins
    assert f"torch=={pin('torch', version('torch'))[0].split('==')[1]}" in pins
    assert not any(p.startswith("nnunet-multimodal") for p in pins)
    assert lines == pinned_requirements()
    pyproject = (generic_submission / "plugin" / "pyproject.toml").read_text()
    assert '"nnunet_multimodal.trainers"' in pyproject
    assert '"nnunet_multimodal.submission"' in pyproject
    assert (generic_submission / "plugin/nnunet_multimodal/trainers/nnunet_mm_cmsad.py").is_file()
    assert (generic_submission / "plugin/nnunet_multimodal/plans/README.md").is_file()

    spec = json.loads((generic_submission / "submission.json").read_text())
    best = json.loads(inference_information.read_text())["best_model_or_ensemble"]
    selected = [f"{m['trainer']}__{m['plans_identifier']}__{m['configuration']}"
                for m in best["selected_model_or_models"]]
    assert [Path(m["folder"]).name for m in spec["models"]] == selected
    assert spec["layout"] == "nnunet"
    for model in spec["models"]:
        assert (generic_submission / model["folder"] / "fold_0" / "checkpoint_final.pth").is_file()
    assert (generic_submission / spec["postprocessing"]).read_bytes() == Path(best["postprocessing_file"]).read_bytes()
    assert spec["built_with"]["nnunetv2"] == version("nnunetv2")


def test_runner_from_the_submission_alone_equals_nnunet_pipeline(workspace, phantom_dataset, generic_submission,
                                                                 inference_information, reference_predictions,
                                                                 tmp_path):
    """The runner script, with only the submission's own plugin copy installed, reproduces nnU-Net's predict ->
    ensemble -> apply postprocessing of what find_best_configuration selected."""
    from batchgenerators.utilities.file_and_folder_operations import load_json, load_pickle
    from nnunetv2.ensembling.ensemble import merge_files
    from nnunetv2.postprocessing.remove_connected_components import load_postprocess_save
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q", "--target",
                    str(site), str(generic_submission / "plugin")], check=True, capture_output=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}
    env.update(PYTHONPATH=str(site), nnUNet_def_n_proc="1")
    result = subprocess.run([sys.executable, str(generic_submission / "run_submission.py"), "-i",
                             str(phantom_dataset / "imagesTs"), "-o", str(tmp_path / "out"), "-device", "cpu"],
                            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 case(s) written" in result.stdout
    assert str(site / "nnunet_multimodal" / "trainers") in result.stdout

    best = json.loads(inference_information.read_text())["best_model_or_ensemble"]
    members = [reference_predictions / f"{m['trainer']}__{m['plans_identifier']}__{m['configuration']}"
               for m in best["selected_model_or_models"]]
    plans = PlansManager(load_json(str(members[0] / "plans.json")))
    label_manager = plans.get_label_manager(load_json(str(members[0] / "dataset.json")))
    pp_functions, pp_kwargs = load_pickle(best["postprocessing_file"])
    for case in sorted(p.name[: -len(".nii.gz")] for p in (phantom_dataset / "labelsTs").iterdir()):
        merge_files([str(m / f"{case}.npz") for m in members], str(tmp_path / case), ".nii.gz",
                    plans.image_reader_writer_class(), label_manager)
        load_postprocess_save(str(tmp_path / f"{case}.nii.gz"), str(tmp_path / f"{case}_pp.nii.gz"),
                              plans.image_reader_writer_class(), pp_functions, pp_kwargs)
        expected, written = (sitk.ReadImage(str(tmp_path / n)) for n in (f"{case}_pp.nii.gz", f"out/{case}.nii.gz"))
        assert same_grid(written, expected)
        assert np.array_equal(sitk.GetArrayFromImage(written), sitk.GetArrayFromImage(expected))


def brats2021_input(phantom_raw: Path, root: Path) -> dict[str, dict[str, Path]]:
    """The phantom's test cases as BraTS 2018-2021 case folders, plus copies to break; returns the files."""
    keys = ("t1", "t1ce", "t2", "flair")
    test_cases = sorted({p.name[: -len("_0000.nii.gz")] for p in (phantom_raw / "imagesTs").glob("*_0000.nii.gz")})
    cases = {}
    for index, source in enumerate([*test_cases, test_cases[0], test_cases[0], test_cases[0]]):
        name = f"BraTS2021_{index:05d}"
        cases[name] = {k: root / name / f"{name}_{k}.nii.gz" for k in keys}
        for channel, key in enumerate(keys):
            cases[name][key].parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(phantom_raw / "imagesTs" / f"{source}_{channel:04d}.nii.gz", cases[name][key])
    return cases


def test_brats2021_submission_labels_missing_modality_and_bad_cases(workspace, brats_region_model, nnunet_paths,
                                                                    monkeypatch, tmp_path, capsys):
    from nnunetv2.dataset_conversion.Dataset137_BraTS21 import convert_labels_back_to_BraTS

    from nnunet_multimodal.inference.missing import MissingModalityPredictor

    raw, model = brats_region_model
    monkeypatch.setenv("nnUNet_extTrainer", workspace.env["nnUNet_extTrainer"])
    select = ["-tr", CMSAD_DROPOUT_TRAINER, "-c", "2d", "-p", TINY_PLANS, "-f", "0"]
    assert main(["submission", "build", "-d", str(BRATS_ID), "--layout", "brats2023", "-o", str(tmp_path / "x"),
                 *select]) == 2
    assert "does not fit the brats2023 layout" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    submission = tmp_path / "submission"
    assert main(["submission", "build", "-d", str(BRATS_ID), "--layout", "brats", "-o", str(submission), *select]) == 0

    cases = brats2021_input(raw, tmp_path / "in")
    cases["BraTS2021_00002"].pop("t2").unlink()                                   # missing: dropout-trained model
    cases["BraTS2021_00003"]["flair"].write_bytes(b"not an image")                # unreadable
    shutil.copy(cases["BraTS2021_00004"]["t1"], tmp_path / "in/BraTS2021_00004/BraTS2021_00004_t1_v2.nii.gz")
    touch(tmp_path / "in" / "notes" / "README.txt")                               # a folder that is no case
    capsys.readouterr()
    assert runner.main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-device", "cpu"], submission) == 1
    report = capsys.readouterr()
    assert "3 case(s) written" in report.err
    assert re.search(r"BraTS2021_00003: \S+BraTS2021_00003_flair.nii.gz is unreadable", report.err)
    assert re.search(r"BraTS2021_00004: \S+BraTS2021_00004_t1_v2.nii.gz is not one of the brats layout's", report.err)
    assert "notes: no file in" in report.err
    assert "BraTS2021_00002: wrote" in report.out
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.name != MANIFEST) == [
        f"BraTS2021_0000{i}.nii.gz" for i in range(3)]

    expected = nnunet_predict(model, raw / "imagesTs", tmp_path / "nnunet")
    for index, case in enumerate(sorted(p.name for p in expected.glob("*.nii.gz"))):
        written = tmp_path / "out" / f"BraTS2021_{index:05d}.nii.gz"
        assert same_grid(sitk.ReadImage(str(written)), sitk.ReadImage(str(cases[written.name[:15]]["t1"])))
        assert np.array_equal(array(written), convert_labels_back_to_BraTS(array(expected / case)))
    present = {c: cases["BraTS2021_00002"][k] for c, k in enumerate(("t1", "t1ce", "t2", "flair")) if k != "t2"}
    used = MissingModalityPredictor(model, [0]).predict_case(present, set(), tmp_path / "missing" / "case")
    assert used == ["T1", "T1ce", "FLAIR"]
    assert np.array_equal(array(tmp_path / "out" / "BraTS2021_00002.nii.gz"),
                          convert_labels_back_to_BraTS(array(tmp_path / "missing" / "case.nii.gz")))
    assert set(np.unique(array(tmp_path / "out" / "BraTS2021_00002.nii.gz"))) <= {0, 1, 2, 4}


def test_nan_voxels_in_a_staged_case_fail_that_case_naming_the_file(workspace, brats_region_model, nnunet_paths,
                                                                     monkeypatch, tmp_path, capsys):
    raw, _ = brats_region_model
    monkeypatch.setenv("nnUNet_extTrainer", workspace.env["nnUNet_extTrainer"])
    submission = tmp_path / "submission"
    assert main(["submission", "build", "-d", str(BRATS_ID), "--layout", "brats", "-o", str(submission), "-tr",
                 CMSAD_DROPOUT_TRAINER, "-c", "2d", "-p", TINY_PLANS, "-f", "0"]) == 0
    cases = brats2021_input(raw, tmp_path / "in")
    for name in sorted(cases)[1:]:
        shutil.rmtree(tmp_path / "in" / name)
    t2 = cases["BraTS2021_00000"]["t2"]
    write_nan_voxels(t2, 4)
    capsys.readouterr()
    assert runner.main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-device", "cpu"], submission) == 1
    report = capsys.readouterr().err
    assert "0 case(s) written" in report
    assert f"{t2} has 4 NaN/Inf voxels" in report
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
