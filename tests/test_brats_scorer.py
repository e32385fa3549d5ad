"""`--metrics brats` against the BraTS 2023+ scorer (github.com/rachitsaluja/BraTS-2023-Metrics, eval.py).

The scorer is no package, so `scorer_values` below re-implements it step by step from its facts and calls the
libraries it calls (DeepMind's surface_distance, cc3d) directly; our module groups lesions in fewer steps."""

import json
import math

import cc3d
import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import surface_distance
from helpers import SHARED
from nnunetv2.evaluation.evaluate_predictions import region_or_label_to_mask
from scipy import ndimage

from nnunet_multimodal.cli import main
from nnunet_multimodal.data.convert.layouts import BRATS_REGIONS_2023, BRATS_REGIONS_2024
from nnunet_multimodal.evaluation.brats_scorer import (
    BRATS_METRICS,
    BRATS_TASKS,
    HD95_OF_A_MISS,
    brats_region_metrics,
)
from nnunet_multimodal.evaluation.evaluate import (
    evaluate_case,
    evaluate_folders,
    labels_or_regions_from_dataset_json,
)
from nnunet_multimodal.evaluation.metrics import LesionSettings

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:surface_distance")  # its scipy namespaces
needs_shared = pytest.mark.skipif(not (SHARED / "data").is_dir(), reason="../shared/data is absent (users' clones)")


@pytest.fixture
def library_inf(monkeypatch):
    """surface_distance's code for an empty mask uses np.Inf, gone in NumPy 2: restored for the reference run
    only, so that the library's own inf (which the scorer reports as 374) is what we compare against."""
    monkeypatch.setattr(np, "Inf", np.inf, raising=False)


def library_hd95(gt, pred, zooms) -> float:
    # the scorer's vendored copy takes 0/1 ints; the PyPI package asks for bool, same values
    distances = surface_distance.compute_surface_distances(gt.astype(bool), pred.astype(bool), zooms)
    return surface_distance.compute_robust_hausdorff(distances, 95)


def scorer_values(gt, pred, zooms, dilation, threshold) -> dict:
    """get_LesionWiseScores and the per-label part of get_LesionWiseResults (eval.py), on the arrays the scorer
    reads with nibabel: (x, y, z) axes, 0/1 floats, the header's zooms."""
    sx, sy, sz = zooms
    both_empty = np.all(gt == 0) and np.all(pred == 0)
    values = {"Legacy_Dice": 1.0 if both_empty else
              2.0 * np.logical_and(gt, pred).sum() / (gt.astype(bool).sum() + pred.astype(bool).sum()),
              "Legacy_HD95": 0.0 if both_empty else library_hd95(gt, pred, zooms)}
    # get_sensitivity_and_specificity, GaNDLF's formula
    agree = np.where(pred == gt, 1, 0)
    tp = agree[pred == 1].sum()
    tn = np.count_nonzero((pred != 1) & (gt != 1))
    values["Sensitivity"] = 1.0 * tp / (tp + (gt.sum() - tp) + np.finfo(float).eps)
    values["Specificity"] = 1.0 * tn / (tn + (pred.sum() - tp) + np.finfo(float).eps)
    if pred.sum() == 0 and gt.sum() == 0:
        values["Sensitivity"] = 1.0
    values["GT_Complete_Volume"] = gt.sum() * sx * sy * sz

    structure = ndimage.generate_binary_structure(3, 2)
    gt_components = cc3d.connected_components(gt, connectivity=26)
    pred_components = cc3d.connected_components(pred, connectivity=26)
    grown = cc3d.connected_components(ndimage.binary_dilation(gt, structure=structure, iterations=dilation),
                                      connectivity=26)
    combined = np.zeros_like(grown)        # get_GTseg_combinedByDilation
    for group in range(1, int(grown.max()) + 1):
        members = gt_components * (grown == group)
        combined[members > 0] = group
    matched, rows = [], []
    for lesion_id in range(1, int(combined.max()) + 1):
        lesion = combined == lesion_id
        reach = ndimage.binary_dilation(lesion, structure=structure, iterations=dilation)
        hits = np.unique(pred_components * reach)
        hits = hits[hits != 0]
        matched += hits.tolist()
        union = np.isin(pred_components, hits)
        lesion_dice = 2.0 * np.logical_and(union, lesion).sum() / (union.sum() + lesion.sum())
        rows.append((len(hits), lesion.sum() * sx * sy * sz, lesion_dice, library_hd95(lesion, union, zooms)))
    false_positives = np.unique(pred_components[np.isin(pred_components, matched + [0], invert=True)])
    kept = [row for row in rows if row[1] > threshold]
    denominator = len(kept) + len(false_positives)
    hd95s = [HD95_OF_A_MISS if math.isinf(row[3]) else row[3] for row in kept]   # the scorer's replace(inf, 374)
    values["LesionWise_Score_Dice"] = sum(row[2] for row in kept) / denominator if denominator else 1.0
    values["LesionWise_Score_HD95"] = ((sum(hd95s) + len(false_positives) * 374) / denominator if denominator
                                       else 0.0)
    values["Num_TP"] = sum(1 for row in kept if row[0] > 0)
    values["Num_FN"] = sum(1 for row in kept if row[0] == 0)
    values["Num_FP"] = len(false_positives)
    if math.isinf(values["Legacy_HD95"]):
        values["Legacy_HD95"] = 374.0
    return values


def assert_same(ours: dict, theirs: dict) -> None:
    assert set(ours) == set(BRATS_METRICS) == set(theirs)
    for name in BRATS_METRICS:
        assert ours[name] == pytest.approx(float(theirs[name]), abs=1e-6), name


def blobs(rng, shape, count, largest) -> np.ndarray:
    mask = np.zeros(shape, bool)
    for _ in range(count):
        size = rng.integers(1, largest + 1, 3)
        corner = [rng.integers(0, s - z + 1) for s, z in zip(shape, size)]
        mask[tuple(slice(c, c + z) for c, z in zip(corner, size))] = True
    return mask


@pytest.mark.parametrize("task", ["GLI", "MET"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_masks_match_the_scorer(seed, task, library_inf):
    rng = np.random.default_rng(seed)
    reference = blobs(rng, (14, 30, 26), 6, 5)                   # (z, y, x), as we read images
    prediction = (np.roll(reference, 1, axis=2) & ~blobs(rng, reference.shape, 2, 6)) | blobs(rng, reference.shape,
                                                                                               3, 3)
    reference |= blobs(rng, reference.shape, 3, 4)               # lesions the prediction may miss
    spacing = (2.5, 0.9, 1.2)                                    # (z, y, x)
    settings = BRATS_TASKS[task]
    theirs = scorer_values(reference.T.astype(float), prediction.T.astype(float), spacing[::-1],
                           settings.dilation, settings.min_volume)
    assert_same(brats_region_metrics(reference, prediction, spacing, task), theirs)


REAL_CASES = {
    "isles22": "isles22/derivatives/sub-strokecase0009/ses-0001/sub-strokecase0009_ses-0001_msk.nii.gz",
    "prostatex": "prostatex/annotations/ProstateX-0000_07-07-2011.nii.gz",
    "prostatex_empty": "prostatex/annotations/ProstateX-0001_07-08-2011.nii.gz",
}


@needs_shared
@pytest.mark.parametrize("task", ["GLI", "MEN", "MET"])
@pytest.mark.parametrize("case", sorted(REAL_CASES))
def test_real_masks_match_the_scorer(case, task, tmp_path, library_inf):
    """A real reference and a prediction made from it (shifted, its smallest lesion removed, a false positive
    added), read by our reader and, as the scorer reads them, by nibabel."""
    reference_file = SHARED / "data" / REAL_CASES[case]
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(reference_file))) > 0
    prediction = np.roll(reference, 1, axis=1)
    components = cc3d.connected_components(prediction, connectivity=26)
    if components.max() > 1:
        prediction[components == np.argmin(np.bincount(components.ravel())[1:]) + 1] = False
    prediction[:2, :3, :3] = True
    prediction_image = sitk.GetImageFromArray(prediction.astype(np.uint8))
    prediction_image.CopyInformation(sitk.ReadImage(str(reference_file)))
    sitk.WriteImage(prediction_image, str(tmp_path / "prediction.nii.gz"))

    ours = evaluate_case(reference_file, tmp_path / "prediction.nii.gz", [1], "nnunet", None, metrics="brats",
                         brats_task=task)
    gt_nii, pred_nii = nib.load(reference_file), nib.load(tmp_path / "prediction.nii.gz")
    gt, pred = (gt_nii.get_fdata() > 0).astype(float), (pred_nii.get_fdata() > 0).astype(float)
    settings = BRATS_TASKS[task]
    theirs = scorer_values(gt, pred, pred_nii.header.get_zooms(), settings.dilation, settings.min_volume)
    assert_same(ours["metrics"]["1"], theirs)


def cube(shape=(12, 12, 12), corner=(2, 2, 2), size=(4, 4, 4)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[tuple(slice(c, c + s) for c, s in zip(corner, size))] = True
    return mask


def test_both_empty():
    """get_LesionWiseScores: full Dice 1, HD95 0; get_LesionWiseResults: 0/0 lesion scores become 1 and 0."""
    empty = np.zeros((6, 6, 6), bool)
    values = brats_region_metrics(empty, empty, (1, 1, 1))
    assert values == {"LesionWise_Score_Dice": 1.0, "LesionWise_Score_HD95": 0.0, "Legacy_Dice": 1.0,
                      "Legacy_HD95": 0.0, "Sensitivity": 1.0, "Specificity": pytest.approx(1.0), "Num_TP": 0,
                      "Num_FP": 0, "Num_FN": 0, "GT_Complete_Volume": 0.0}


def test_empty_reference_scores_the_prediction_as_a_false_positive():
    """get_LesionWiseResults: the unmatched component is a FP (Dice 0, HD95 374); inf full HD95 becomes 374."""
    values = brats_region_metrics(np.zeros((12, 12, 12), bool), cube(), (1, 1, 1))
    assert values["Legacy_Dice"] == 0.0
    assert values["Legacy_HD95"] == 374.0
    assert values["LesionWise_Score_Dice"] == 0.0
    assert values["LesionWise_Score_HD95"] == 374.0
    assert values["Num_FP"] == 1
    assert values["Sensitivity"] == 0.0
    assert values["Specificity"] == pytest.approx((12 ** 3 - 64) / 12 ** 3)


def test_empty_prediction_misses_the_lesion():
    """get_LesionWiseScores: a lesion touching no prediction is a FN with Dice 0 and HD95 inf, reported 374."""
    values = brats_region_metrics(cube(), np.zeros((12, 12, 12), bool), (1, 1, 1))
    assert values["Legacy_Dice"] == 0.0
    assert values["Legacy_HD95"] == 374.0
    assert values["LesionWise_Score_Dice"] == 0.0
    assert values["LesionWise_Score_HD95"] == 374.0
    assert (values["Num_TP"], values["Num_FN"], values["Num_FP"]) == (0, 1, 0)
    assert values["Sensitivity"] == 0.0
    assert values["Specificity"] == pytest.approx(1.0)
    assert values["GT_Complete_Volume"] == 64.0


def test_identical_masks():
    values = brats_region_metrics(cube(), cube(), (1, 2, 3))
    assert values["Legacy_HD95"] == 0.0
    assert values["LesionWise_Score_Dice"] == 1.0
    assert values["GT_Complete_Volume"] == 64 * 6


def two_lesions(small_size=(3, 3, 3)) -> np.ndarray:
    return cube((20, 20, 20), (1, 1, 1), (4, 4, 4)) | cube((20, 20, 20), (12, 12, 12), small_size)


def test_a_missed_lesion_under_the_threshold_is_left_out():
    """get_LesionWiseResults: lesions of at most the threshold leave the score, Num_TP and Num_FN."""
    reference = two_lesions()                            # 64 mm³ kept, 27 mm³ left out by GLI's 50 mm³
    prediction = cube((20, 20, 20), (1, 1, 1), (4, 4, 4))
    values = brats_region_metrics(reference, prediction, (1, 1, 1), "GLI")
    assert values["LesionWise_Score_Dice"] == 1.0
    assert values["LesionWise_Score_HD95"] == 0.0
    assert (values["Num_TP"], values["Num_FN"], values["Num_FP"]) == (1, 0, 0)
    assert values["Legacy_Dice"] == pytest.approx(2 * 64 / (91 + 64))


def test_the_threshold_keeps_lesions_above_it_only():
    """get_LesionWiseResults keeps gt_lesion_vol > threshold; get_challenge_parameters: GLI 50, MET 2 mm³."""
    reference = two_lesions(small_size=(5, 5, 2))        # 50 mm³: at GLI's threshold, left out
    prediction = cube((20, 20, 20), (1, 1, 1), (4, 4, 4))
    assert brats_region_metrics(reference, prediction, (1, 1, 1), "GLI")["Num_FN"] == 0
    assert brats_region_metrics(reference, prediction, (1, 1, 1), "MET")["Num_FN"] == 1   # MET: 2 mm³
    assert brats_region_metrics(reference, prediction, (1, 1, 1), "MET")["LesionWise_Score_Dice"] == 0.5


def test_the_threshold_is_in_mm3():
    reference = two_lesions()                            # the small lesion: 27 voxels, 54 mm³ at 2 mm³ a voxel
    prediction = cube((20, 20, 20), (1, 1, 1), (4, 4, 4))
    assert brats_region_metrics(reference, prediction, (1, 1, 2), "GLI")["Num_FN"] == 1


def test_a_prediction_on_a_left_out_lesion_is_no_false_positive():
    """get_LesionWiseScores collects matched components for every lesion before the threshold applies."""
    reference = two_lesions()
    values = brats_region_metrics(reference, reference, (1, 1, 1), "GLI")
    assert (values["Num_TP"], values["Num_FP"]) == (1, 0)
    assert values["LesionWise_Score_Dice"] == 1.0


def test_dilation_groups_lesions_per_task():
    """get_GTseg_combinedByDilation with get_challenge_parameters' dilation: GLI 3, MEN 1."""
    reference = cube((8, 8, 20), (2, 2, 2), (4, 4, 4)) | cube((8, 8, 20), (2, 2, 10), (4, 4, 4))   # 4 voxels apart
    prediction = cube((8, 8, 20), (2, 2, 2), (4, 4, 4))
    grouped = brats_region_metrics(reference, prediction, (1, 1, 1), "GLI")     # 3 steps each side join them
    separate = brats_region_metrics(reference, prediction, (1, 1, 1), "MEN")    # 1 step does not
    assert grouped["Num_TP"] + grouped["Num_FN"] == 1
    assert grouped["LesionWise_Score_Dice"] == pytest.approx(2 * 64 / (128 + 64))
    assert (separate["Num_TP"], separate["Num_FN"]) == (1, 1)
    assert separate["LesionWise_Score_Dice"] == 0.5


def test_a_prediction_within_the_dilated_lesion_matches_it():
    """get_LesionWiseScores matches predicted components touching the lesion dilated on its own."""
    reference = cube((8, 8, 20), (2, 2, 2), (4, 4, 4))
    prediction = reference | cube((8, 8, 20), (2, 2, 8), (4, 4, 2))   # 2 voxels beyond the lesion
    assert brats_region_metrics(reference, prediction, (1, 1, 1), "GLI")["Num_FP"] == 0
    assert brats_region_metrics(reference, prediction, (1, 1, 1), "MEN")["Num_FP"] == 1


def test_invalid_inputs():
    with pytest.raises(ValueError, match="BraTS task"):
        brats_region_metrics(cube(), cube(), (1, 1, 1), "LGG")
    with pytest.raises(ValueError, match="3D"):
        brats_region_metrics(cube()[0], cube()[0], (1, 1))
    with pytest.raises(ValueError, match="shape"):
        brats_region_metrics(cube(), cube((12, 12, 13)), (1, 1, 1))


def test_our_brats_2023_regions_are_the_scorers_wt_tc_et():
    labels = np.arange(5).reshape(1, 1, 5) % 4                    # 0 1 2 3 0
    scorer = {"WT": np.isin(labels, (1, 2, 3)), "TC": np.isin(labels, (1, 3)), "ET": labels == 3}
    regions = labels_or_regions_from_dataset_json({"labels": BRATS_REGIONS_2023, "regions_class_order": [2, 1, 3]})
    for region, name in zip(regions, ("WT", "TC", "ET")):
        assert np.array_equal(region_or_label_to_mask(labels, region), scorer[name]), name


def write(array, path, spacing=(1.0, 1.0, 2.0)):
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))


@pytest.fixture
def brats_folders(tmp_path):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    ref.mkdir()
    pred.mkdir()
    for i in range(2):
        labels = np.zeros((10, 16, 16), np.uint8)
        labels[2:8, 3:12, 3:12] = 2
        labels[3:7, 5:10, 5:10] = 1
        labels[4:6, 6:9, 6:9] = 3
        predicted = np.roll(labels, i + 1, axis=2)
        predicted[8:10, 0:2, 0:2] = 3                              # an enhancing false positive
        write(labels, ref / f"BraTS-GLI-0000{i}-000.nii.gz")
        write(predicted, pred / f"BraTS-GLI-0000{i}-000.nii.gz")
    djfile = tmp_path / "dataset.json"
    djfile.write_text(json.dumps({"labels": BRATS_REGIONS_2023, "regions_class_order": [2, 1, 3],
                                  "file_ending": ".nii.gz"}))
    return ref, pred, djfile


def test_cli_metrics_brats(brats_folders, tmp_path, capsys):
    ref, pred, djfile = brats_folders
    out = tmp_path / "out"
    command = ["evaluate", "-ref", str(ref), "-pred", str(pred), "-djfile", str(djfile), "-o", str(out),
               "--metrics", "brats", "--brats-task", "MET"]
    for _ in range(2):                                          # the second run replaces our own outputs
        assert main(command) == 0
    summary = json.loads((out / "summary_nnunet_mm.json").read_text())
    assert summary["written_by"] == "nnunet-mm evaluate"
    assert summary["metrics"] == "brats"
    assert summary["brats"] == {"task": "MET", "lesion_dilation": 1, "lesion_min_volume_mm3": 2.0}
    assert list(summary["mean"]) == ["(1, 2, 3)", "(1, 3)", "(3,)"]
    case = summary["metric_per_case"][0]
    reference = sitk.GetArrayFromImage(sitk.ReadImage(case["reference_file"]))
    prediction = sitk.GetArrayFromImage(sitk.ReadImage(case["prediction_file"]))
    expected = brats_region_metrics(np.isin(reference, (1, 3)), np.isin(prediction, (1, 3)), (2.0, 1.0, 1.0), "MET")
    assert case["metrics"]["(1, 3)"] == pytest.approx(expected)
    assert case["metrics"]["(3,)"]["Num_FP"] == 1
    header = (out / "per_case_nnunet_mm.csv").read_text().splitlines()[0].split(",")
    assert header == ["case", "label_or_region", *BRATS_METRICS]
    assert "LesionWise_Score_Dice" in capsys.readouterr().out


def test_cli_brats_task_defaults_to_gli(brats_folders):
    ref, pred, djfile = brats_folders
    assert main(["evaluate", "-ref", str(ref), "-pred", str(pred), "-djfile", str(djfile), "--metrics", "brats"]) == 0
    assert json.loads((pred / "summary_nnunet_mm.json").read_text())["brats"]["task"] == "GLI"


def test_cli_metrics_default_is_nnunet(brats_folders):
    ref, pred, djfile = brats_folders
    assert main(["evaluate", "-ref", str(ref), "-pred", str(pred), "-djfile", str(djfile)]) == 0
    summary = json.loads((pred / "summary_nnunet_mm.json").read_text())
    assert summary["metrics"] == "nnunet"
    assert summary["convention"] == "nnunet"
    assert set(summary["mean"]["(3,)"]) == {"Dice", "IoU", "HD95", "TP", "FP", "FN", "n_ref", "n_pred",
                                         "volume_ref_mm3", "volume_pred_mm3"}


@pytest.mark.parametrize("options, message", [
    (["--metrics", "brats", "--convention", "brats"], "--convention set up --metrics nnunet"),
    (["--metrics", "brats", "--convention", "nnunet"], "--convention set up --metrics nnunet"),
    (["--metrics", "brats", "--lesion-wise"], "--lesion-wise set up --metrics nnunet"),
    (["--metrics", "brats", "--lesion-wise", "--lesion-dilation", "3"], "--lesion-wise, --lesion-dilation set up"),
    (["--brats-task", "MET"], "--brats-task sets the lesion parameters of --metrics brats: add --metrics brats"),
])
def test_cli_refuses_mixed_options(brats_folders, capsys, options, message):
    ref, pred, djfile = brats_folders
    assert main(["evaluate", "-ref", str(ref), "-pred", str(pred), "-djfile", str(djfile), *options]) == 2
    assert message in capsys.readouterr().err
    assert not (pred / "summary_nnunet_mm.json").exists()


def test_cli_refuses_2d_images_for_the_brats_scorer(tmp_path, capsys):
    for folder in ("ref", "pred"):
        (tmp_path / folder).mkdir()
        sitk.WriteImage(sitk.GetImageFromArray(np.ones((8, 8), np.uint8)), str(tmp_path / folder / "case.png"))
    assert main(["evaluate", "-ref", str(tmp_path / "ref"), "-pred", str(tmp_path / "pred"), "-l", "1",
                 "--file-ending", ".png", "--metrics", "brats"]) == 2
    assert f"{tmp_path / 'ref' / 'case.png'} is a 2D image" in capsys.readouterr().err


def test_api_refuses_lesion_settings_with_brats_metrics(brats_folders):
    ref, pred, _ = brats_folders
    with pytest.raises(ValueError, match="lesion settings belong to metrics='nnunet'"):
        evaluate_folders(ref, pred, [1], lesions=LesionSettings(3, 50), metrics="brats", progress=False)


def test_cli_task_choices_are_the_scorers():
    from nnunet_multimodal.cli import build_parser

    evaluate = build_parser()._subparsers._group_actions[0].choices["evaluate"]
    task_option = next(a for a in evaluate._actions if a.dest == "brats_task")
    assert sorted(task_option.choices) == sorted(BRATS_TASKS)


def test_cli_notes_that_the_2024_resection_cavity_follows_the_2023_rules(brats_folders, capsys):
    ref, pred, djfile = brats_folders
    djfile.write_text(json.dumps({"labels": BRATS_REGIONS_2024, "regions_class_order": [2, 2, 1, 1, 3, 4],
                                  "file_ending": ".nii.gz"}))
    assert main(["evaluate", "-ref", str(ref), "-pred", str(pred), "-djfile", str(djfile), "--metrics", "brats"]) == 0
    assert "label 4 (BraTS 2024's resection cavity) is scored with the BraTS 2023 scorer's rules" in \
        capsys.readouterr().err
