"""The BraTS-like (3D) and prostate-like (2D) synthetic phantoms: contrast rules per modality, geometry, labels,
reproducibility and the datasets they write. Small shapes; each case is generated once per module."""

import json
from functools import cache

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from nnunet_multimodal import cli
from nnunet_multimodal.data import brats_phantom as brats
from nnunet_multimodal.data import prostate_phantom as prostate
from nnunet_multimodal.data.phantom_acquisition import block_mean, odd_supersampling, smooth_field
from nnunet_multimodal.data.phantom_datasets import PhantomCase, write_phantom_dataset

BRATS_SPEC = brats.BratsPhantomSpec(shape=(24, 80, 80))
PROSTATE_SPEC = prostate.ProstatePhantomSpec()


@cache
def brats_case(index: int) -> PhantomCase:
    return brats.generate_brats_case(BRATS_SPEC, index)


@cache
def prostate_case(index: int) -> PhantomCase:
    return prostate.generate_prostate_case(PROSTATE_SPEC, index)


def brats_ratio(modality: str, tissue: int, cases=range(6)) -> float:
    """Mean intensity of a tissue over that of healthy grey and white matter, averaged over the cases that have it
    (a ratio, so each case's arbitrary units cancel)."""
    ratios = []
    for index in cases:
        case = brats_case(index)
        if (case.tissues == tissue).sum() >= 5:
            image = case.images[modality]
            healthy = np.isin(case.tissues, (brats.GREY_MATTER, brats.WHITE_MATTER))
            ratios.append(image[case.tissues == tissue].mean() / image[healthy].mean())
    assert ratios, f"no case has {brats.TISSUES[tissue]}"
    return float(np.mean(ratios))


# --- acquisition helpers: hand-computed cases


def test_thick_slices_get_an_odd_number_of_fine_samples():
    assert odd_supersampling((3.0, 1.0, 1.0)) == (3, 1, 1)


def test_a_half_thick_slice_rounds_to_an_odd_count():
    assert odd_supersampling((2.0, 1.0)) == (3, 1)


def test_block_mean_averages_each_voxels_samples():
    fine = np.array([[0.0, 1.0, 2.0, 3.0]])
    assert np.array_equal(block_mean(fine, (1, 2)), [[0.5, 2.5]])


def test_smooth_field_has_unit_variance():
    axes = [np.arange(200, dtype=np.float32), np.arange(200, dtype=np.float32)]
    assert smooth_field(np.random.default_rng(0), axes, 10.0).std() == pytest.approx(1.0, abs=0.15)


# --- BraTS-like phantom: what each modality shows


@pytest.mark.parametrize("modality", ["FLAIR", "T2"])
def test_brats_edema_is_bright_in_flair_and_t2(modality):
    assert brats_ratio(modality, brats.OEDEMA) > 1.12


@pytest.mark.parametrize("modality", ["T1", "T1c"])
def test_brats_edema_is_faint_in_t1_and_t1c(modality):
    assert abs(brats_ratio(modality, brats.OEDEMA) - 1) < 0.1


def test_brats_enhancing_rim_is_brighter_than_the_core_in_t1c():
    assert brats_ratio("T1c", brats.ENHANCING) > 2 * brats_ratio("T1c", brats.NECROSIS)


def test_brats_enhancing_rim_is_bright_in_t1c():
    assert brats_ratio("T1c", brats.ENHANCING) > 1.3


def test_brats_enhancing_rim_is_not_bright_in_t1():
    assert brats_ratio("T1", brats.ENHANCING) < 1.0


@pytest.mark.parametrize("modality, darker", [("T1", True), ("T1c", True), ("T2", False)])
def test_brats_necrosis_is_dark_in_t1_and_t1c_and_bright_in_t2(modality, darker):
    ratio = brats_ratio(modality, brats.NECROSIS)
    assert ratio < 0.8 if darker else ratio > 1.2


@pytest.mark.parametrize("modality, darker", [("T2", False), ("FLAIR", True)])
def test_brats_csf_is_bright_in_t2_and_dark_in_flair(modality, darker):
    ratio = brats_ratio(modality, brats.CSF)
    assert ratio < 0.7 if darker else ratio > 1.2


@pytest.mark.parametrize("modality", brats.BratsPhantomSpec.modalities)
def test_brats_every_modality_is_zero_outside_the_brain(modality):
    case = brats_case(0)
    assert not case.images[modality][case.tissues == brats.BACKGROUND].any()


def test_brats_brain_is_nonzero():
    case = brats_case(0)
    assert (case.images["T1"][case.tissues != brats.BACKGROUND] > 0).all()


def test_brats_labels_are_inside_the_brain():
    case = brats_case(0)
    assert not case.label[case.tissues == brats.BACKGROUND].any()


def test_brats_labels_are_the_brats_2023_values():
    assert set(np.unique(np.concatenate([brats_case(i).label.ravel() for i in range(6)]))) == {0, 1, 2, 3}


def test_brats_regions_decode_back_to_the_labels():
    """nnU-Net's own decoding of WT/TC/ET (region masks as certain probabilities) gives the labels again."""
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    manager = LabelManager(BRATS_SPEC.labels, BRATS_SPEC.regions_class_order)
    label = brats_case(0).label
    regions = np.stack([np.isin(label, region) for region in manager.foreground_regions]).astype(np.float32)
    assert np.array_equal(manager.convert_probabilities_to_segmentation(regions), label)


def test_brats_lesion_sizes_range_from_a_few_voxels_to_thousands():
    sizes = []
    for index in range(6):
        pieces, count = ndimage.label(brats_case(index).label > 0)
        sizes += list(np.bincount(pieces.ravel())[1:])
    assert min(sizes) <= 10 and max(sizes) >= 1000


def test_brats_intensity_units_differ_between_cases():
    medians = [np.median(brats_case(i).images["T1"][brats_case(i).tissues == brats.WHITE_MATTER]) for i in range(3)]
    assert max(medians) / min(medians) > 1.2


# --- prostate-like phantom


def separability(image, inside, outside):
    return abs(image[inside].mean() - image[outside].mean()) / np.sqrt((image[inside].var() + image[outside].var()) / 2)


def test_prostate_gland_is_seen_mainly_in_t2w():
    scores = {m: [] for m in PROSTATE_SPEC.modalities}
    for index in range(8):
        case = prostate_case(index)
        filled = case.label > 0
        around = ndimage.binary_dilation(filled, iterations=8) & ~ndimage.binary_dilation(filled, iterations=2)
        for modality, image in case.images.items():
            scores[modality].append(separability(image, case.label == 1, around))
    means = {m: np.mean(s) for m, s in scores.items()}
    assert means["T2W"] > 1.3 * max(means["ADC"], means["HBV"])


def prostate_lesion_ratio(modality: str) -> float:
    """Mean lesion intensity over the rest of the gland's, averaged over the cases with a lesion."""
    ratios = [case.images[modality][case.label == 2].mean() / case.images[modality][case.label == 1].mean()
              for case in map(prostate_case, range(8)) if (case.label == 2).any()]
    return float(np.mean(ratios))


def test_prostate_lesion_is_dark_in_adc():
    assert prostate_lesion_ratio("ADC") < 0.85


def test_prostate_lesion_is_bright_in_hbv():
    assert prostate_lesion_ratio("HBV") > 1.5


def test_prostate_lesion_is_faint_in_t2w():
    assert abs(1 - prostate_lesion_ratio("T2W")) < abs(1 - prostate_lesion_ratio("ADC"))


def test_prostate_lesions_are_absent_in_some_cases_and_present_in_others():
    has_lesion = {bool((prostate_case(i).label == 2).any()) for i in range(8)}
    assert has_lesion == {True, False}


# --- both kinds: reproducibility, geometry, datasets

KINDS = {"brats": (brats.BratsPhantomSpec, {"shape": (8, 32, 32)}),
         "prostate": (prostate.ProstatePhantomSpec, {"shape": (64, 64), "spacing": (1.0, 1.0)})}


def tiny_spec(kind: str, **fields):
    spec_class, shape = KINDS[kind]
    return spec_class(**{**shape, **fields})


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_and_case_give_the_same_images(kind):
    a, b = tiny_spec(kind, seed=3).generate(2), tiny_spec(kind, seed=3).generate(2)
    assert all(np.array_equal(a.images[m], b.images[m]) for m in a.images) and np.array_equal(a.label, b.label)


@pytest.mark.parametrize("kind", KINDS)
def test_another_case_index_gives_other_images(kind):
    assert not np.array_equal(tiny_spec(kind).generate(0).images[tiny_spec(kind).modalities[0]],
                              tiny_spec(kind).generate(1).images[tiny_spec(kind).modalities[0]])


@pytest.mark.parametrize("kind", KINDS)
def test_another_seed_gives_other_images(kind):
    modality = tiny_spec(kind).modalities[0]
    assert not np.array_equal(tiny_spec(kind, seed=1).generate(0).images[modality],
                              tiny_spec(kind, seed=2).generate(0).images[modality])


@pytest.mark.parametrize("kind, spacing, written", [("brats", (3.0, 1.0, 1.0), (1.0, 1.0, 3.0)),
                                                    ("brats", (2.0, 1.5, 1.2), (1.2, 1.5, 2.0)),
                                                    ("prostate", (1.0, 1.2), (1.2, 1.0, 3.0))])
def test_spacing_is_written_as_asked(tmp_path, kind, spacing, written):
    folder = write_phantom_dataset(tmp_path, 7, tiny_spec(kind, spacing=spacing), num_training=1)
    files = sorted((folder / "imagesTr").iterdir()) + sorted((folder / "labelsTr").iterdir())
    # NIfTI stores float32 spacing
    assert np.allclose([sitk.ReadImage(str(f)).GetSpacing() for f in files], written)


def test_prostate_is_written_as_one_slice_volumes(tmp_path):
    folder = write_phantom_dataset(tmp_path, 7, tiny_spec("prostate"), num_training=1)
    assert sitk.ReadImage(str(folder / "labelsTr" / "SyntheticProstate_000.nii.gz")).GetSize() == (64, 64, 1)


@pytest.mark.parametrize("kind", KINDS)
def test_written_dataset_passes_nnunet_integrity_check(tmp_path, kind):
    """nnU-Net's own check (what --verify_dataset_integrity runs), in this process: it raises on any failure."""
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    folder = write_phantom_dataset(tmp_path, 7, tiny_spec(kind), num_training=3, num_test=1)
    verify_dataset_integrity(str(folder), num_processes=1)


def test_dataset_json_says_synthetic_and_records_the_knobs(tmp_path):
    folder = write_phantom_dataset(tmp_path, 7, tiny_spec("brats", noise=0.2), num_training=1)
    content = json.loads((folder / "dataset.json").read_text())
    assert "SYNTHETIC" in content["description"] and content["synthetic_phantom"]["noise"] == 0.2


def test_brats_dataset_json_has_the_channels_and_regions(tmp_path):
    content = json.loads((write_phantom_dataset(tmp_path, 7, tiny_spec("brats"), 1) / "dataset.json").read_text())
    assert (content["channel_names"], content["labels"], content["regions_class_order"]) == (
        {"0": "T1", "1": "T1c", "2": "T2", "3": "FLAIR"},
        {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [1, 3], "enhancing tumor": [3]}, [2, 1, 3])


def test_writing_refuses_an_existing_dataset_id(tmp_path):
    write_phantom_dataset(tmp_path, 7, tiny_spec("prostate"), num_training=1)
    with pytest.raises(FileExistsError, match="Dataset007_SyntheticProstate"):
        write_phantom_dataset(tmp_path, 7, tiny_spec("prostate"), num_training=1, name="Other")


def test_an_interrupted_write_leaves_nothing_behind(tmp_path):
    class Failing(prostate.ProstatePhantomSpec):
        def generate(self, case_index):
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_phantom_dataset(tmp_path, 7, Failing(shape=(64, 64), spacing=(1.0, 1.0)), num_training=1)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs", [{"shape": (16, 16, 16)}, {"shape": (64, 64)}, {"spacing": (3.0, 0.0, 1.0)},
                                    {"edema_contrast": 0.0}, {"lesion_radius_mm": (5.0, 2.0)}, {"noise": -0.1},
                                    {"contrast_jitter": 0.5}])
def test_invalid_brats_spec(kwargs):
    with pytest.raises(ValueError):
        brats.BratsPhantomSpec(**kwargs)


@pytest.mark.parametrize("kwargs", [{"shape": (32, 32)}, {"shape": (8, 64, 64)}, {"lesion_probability": 1.5},
                                    {"lesion_contrast": 0.0}, {"lesion_radius_mm": (0.0, 2.0)}, {"dwi_shift_mm": -1}])
def test_invalid_prostate_spec(kwargs):
    with pytest.raises(ValueError):
        prostate.ProstatePhantomSpec(**kwargs)


@pytest.mark.parametrize("spec_class", [brats.BratsPhantomSpec, prostate.ProstatePhantomSpec])
def test_unknown_difficulty_is_refused(spec_class):
    with pytest.raises(ValueError, match="choose from"):
        spec_class.at_difficulty("extreme")


@pytest.mark.parametrize("dataset_id", [0, 1000])
def test_dataset_id_out_of_range_is_refused(tmp_path, dataset_id):
    with pytest.raises(ValueError, match="1 to 999"):
        write_phantom_dataset(tmp_path, dataset_id, tiny_spec("prostate"), num_training=1)


# --- the command line


@pytest.fixture
def raw_folder(tmp_path, monkeypatch):
    for name in ("nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("nnUNet_raw", str(tmp_path))
    return tmp_path


def test_phantom_command_writes_a_synthetic_dataset(raw_folder, capsys):
    assert cli.main(["phantom", "--kind", "prostate", "-d", "9", "--cases", "2", "--test-cases", "1"]) == 0
    assert "SYNTHETIC" in capsys.readouterr().out


def test_phantom_command_writes_the_cases_asked_for(raw_folder):
    cli.main(["phantom", "--kind", "prostate", "-d", "9", "--cases", "2", "--test-cases", "1", "--seed", "4"])
    folder = raw_folder / "Dataset009_SyntheticProstate"
    assert (len(list((folder / "imagesTr").iterdir())), len(list((folder / "imagesTs").iterdir()))) == (6, 3)


def test_phantom_command_refuses_an_existing_id_with_exit_code_2(raw_folder, capsys):
    (raw_folder / "Dataset009_Mine").mkdir()
    assert cli.main(["phantom", "--kind", "brats", "-d", "9"]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err


def test_phantom_command_refuses_an_id_with_trained_models(raw_folder, tmp_path, monkeypatch):
    (tmp_path / "results" / "Dataset009_Old").mkdir(parents=True)
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    assert cli.main(["phantom", "--kind", "prostate", "-d", "9"]) == 2
