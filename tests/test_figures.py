"""Figures: written without touching pyplot's global backend, and marked so that commands writing to a path the
user named can tell their own earlier figure from the user's file."""

import sys

import pytest

from nnunet_multimodal.figures import new_figure, refuse_foreign_figure, save_figure, written_by_us


def write_one(path):
    fig, ax = new_figure()
    ax.plot([0, 1], [1, 0])
    save_figure(fig, path)


def test_a_saved_figure_is_a_png_marked_as_ours(tmp_path):
    write_one(tmp_path / "f.png")
    assert written_by_us(tmp_path / "f.png")


def test_a_png_of_someone_else_is_not_ours(tmp_path):
    from PIL import Image

    Image.new("L", (4, 4)).save(tmp_path / "user.png")
    assert not written_by_us(tmp_path / "user.png")


def test_a_users_file_at_the_output_path_is_refused(tmp_path):
    (tmp_path / "maps.png").write_bytes(b"the user's notes")
    with pytest.raises(FileExistsError, match="maps.png exists and was not written by nnunet-mm"):
        refuse_foreign_figure(tmp_path / "maps.png")


def test_our_own_earlier_figure_may_be_replaced(tmp_path):
    write_one(tmp_path / "maps.png")
    refuse_foreign_figure(tmp_path / "maps.png")


def test_writing_a_figure_does_not_load_pyplot():
    import subprocess

    script = ("import sys, tempfile, pathlib\nfrom nnunet_multimodal.figures import new_figure, save_figure\n"
              "fig, ax = new_figure()\nsave_figure(fig, pathlib.Path(tempfile.mkdtemp()) / 'f.png')\n"
              "print('matplotlib.pyplot' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


def test_attention_maps_refuse_a_users_file_at_the_output_path_before_loading_the_model(tmp_path):
    from nnunet_multimodal.inference.attention_maps import export_attention_maps

    (tmp_path / "maps.png").write_bytes(b"the user's notes")
    with pytest.raises(FileExistsError, match="maps.png exists and was not written by nnunet-mm"):
        export_attention_maps(tmp_path / "no model", "0", "checkpoint_final.pth", [], tmp_path / "maps.png")
