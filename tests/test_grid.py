"""The one grid check: its spacing tolerance is nnU-Net's, so a case it passes never stops nnU-Net's reader."""

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_multimodal.data.grid import geometry_mismatch, image_geometry, same_grid


def image(spacing=(1.0, 1.0, 3.0), origin=(0.0, 0.0, 0.0)) -> sitk.Image:
    result = sitk.GetImageFromArray(np.zeros((4, 5, 6), np.float32))
    result.SetSpacing(spacing)
    result.SetOrigin(origin)
    return result


def test_identical_grids_are_one_grid():
    assert same_grid(image(), image())


def test_float32_rounding_of_the_spacing_is_one_grid():
    assert same_grid(image(), image(spacing=(float(np.float32(1.0 + 1e-7)), 1.0, 3.0)))


def test_a_spacing_nnunet_refuses_is_named():
    assert geometry_mismatch(image_geometry(image()), image_geometry(image(spacing=(1.0001, 1.0, 3.0)))) == \
        "spacing (1.0001, 1.0, 3.0) differs from (1.0, 1.0, 3.0)"


def test_an_origin_shifted_by_a_fiftieth_of_a_millimetre_is_another_grid():
    assert not same_grid(image(), image(origin=(0.02, 0.0, 0.0)))


def test_an_origin_within_a_hundredth_of_a_millimetre_is_one_grid():
    assert same_grid(image(), image(origin=(0.005, 0.0, 0.0)))


@pytest.mark.parametrize("relative_difference", [1e-4, 1e-6])
def test_the_spacing_check_agrees_with_nnunets_reader(tmp_path, relative_difference):
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    sitk.WriteImage(image(), str(tmp_path / "c_0000.nii.gz"))
    sitk.WriteImage(image(spacing=(1.0 + relative_difference, 1.0, 3.0)), str(tmp_path / "c_0001.nii.gz"))
    ours = same_grid(sitk.ReadImage(str(tmp_path / "c_0000.nii.gz")), sitk.ReadImage(str(tmp_path / "c_0001.nii.gz")))
    try:
        SimpleITKIO().read_images([str(tmp_path / "c_0000.nii.gz"), str(tmp_path / "c_0001.nii.gz")])
        nnunet_reads_it = True
    except RuntimeError:
        nnunet_reads_it = False
    assert ours == nnunet_reads_it
