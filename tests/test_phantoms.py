import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from nnunet_multimodal.data.phantoms import PhantomSpec, generate_case, write_dataset


def contrast_to_noise(image, mask):
    """Mean difference between a structure and the ring just outside it (nested structures filled in),
    in units of the intensity spread inside the structure."""
    filled = ndimage.binary_fill_holes(mask)
    ring = ndimage.binary_dilation(filled, iterations=2) & ~filled
    return abs(image[mask].mean() - image[ring].mean()) / image[mask].std()


@pytest.mark.parametrize("shape", [(64, 64), (32, 48, 48)])
@pytest.mark.parametrize("style", ["labels", "regions"])
def test_shapes_and_labels(shape, style):
    spec = PhantomSpec(shape=shape, label_style=style, modalities=("T1", "T2", "FLAIR", "T1ce"))
    images, label = generate_case(spec, 0)
    assert set(images) == set(spec.modalities)
    assert all(im.shape == shape and im.dtype == np.float32 for im in images.values())
    assert label.shape == shape
    assert set(np.unique(label)) == {0, 1, 2, 3}


@pytest.mark.parametrize("style", ["labels", "regions"])
def test_every_structure_visible_in_two_modalities_and_one_best_in_one(style):
    spec = PhantomSpec(shape=(96, 96), label_style=style)
    best_ratio = []
    for case in range(3):
        images, label = generate_case(spec, case)
        for value in (1, 2, 3):
            cnr = sorted((contrast_to_noise(images[m], label == value) for m in spec.modalities),
                         reverse=True)
            assert cnr[1] > 3, f"label {value} of case {case} visible in fewer than two modalities: {cnr}"
            best_ratio.append(cnr[0] / cnr[1])
    assert max(best_ratio) > 1.5  # the lesion stands out most in T2


def test_deterministic_and_seeded():
    a_images, a_label = generate_case(PhantomSpec(seed=3), 5)
    b_images, b_label = generate_case(PhantomSpec(seed=3), 5)
    c_images, c_label = generate_case(PhantomSpec(seed=4), 5)
    assert np.array_equal(a_label, b_label)
    assert all(np.array_equal(a_images[m], b_images[m]) for m in a_images)
    assert not np.array_equal(a_label, c_label)


def test_paired_appearance_shares_anatomy():
    mr_images, mr_label = generate_case(PhantomSpec(modalities=("MRlike",), seed=7), 2)
    ct_images, ct_label = generate_case(PhantomSpec(modalities=("CTlike",), noise=0.1, bias=0.3, seed=7), 2)
    assert np.array_equal(mr_label, ct_label)
    assert np.corrcoef(mr_images["MRlike"].ravel(), ct_images["CTlike"].ravel())[0, 1] < 0.9


def test_write_dataset_layout(tmp_path):
    spec = PhantomSpec(shape=(32, 32), label_style="regions")
    folder = write_dataset(tmp_path, 5, "P", spec, num_training=3, num_test=1)
    dataset_json = json.loads((folder / "dataset.json").read_text())
    assert dataset_json["channel_names"] == {"0": "T1", "1": "T2", "2": "FLAIR"}
    assert dataset_json["regions_class_order"] == [1, 2, 3]
    assert "SYNTHETIC" in dataset_json["description"]
    assert len(list((folder / "imagesTr").iterdir())) == 9
    assert len(list((folder / "imagesTs").iterdir())) == 3
    image = sitk.ReadImage(str(folder / "imagesTr" / "P_000_0001.nii.gz"))
    assert image.GetSize() == (32, 32, 1)
    with pytest.raises(FileExistsError, match="already exists"):
        write_dataset(tmp_path, 5, "Other", spec, num_training=1)


@pytest.mark.parametrize("kwargs", [{"shape": (8, 8)}, {"shape": (64,)}, {"modalities": ("PET",)},
                                    {"label_style": "nested"}])
def test_invalid_spec(kwargs):
    with pytest.raises(ValueError):
        PhantomSpec(**kwargs)
