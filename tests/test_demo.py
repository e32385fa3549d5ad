import json

from helpers import make_workspace, run_tool

from nnunet_multimodal.demo import run_demo


def test_quick_demo_end_to_end(tmp_path, capsys, monkeypatch):
    env = make_workspace(tmp_path / "unused").env
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        env.pop(name)  # the demo creates its own folders under --root
    root = tmp_path / "demo"
    result = run_tool(["nnunet-mm", "demo", "--quick", "--root", root], env)
    out = result.stdout
    for step in ("[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]", "SYNTHETIC", "mean Dice", "HD95 lesion"):
        assert step in out
    results = json.loads((root / "results.json").read_text())
    assert results["synthetic"] is True
    assert [r["trainer"] for r in results["rows"]] == ["nnUNetTrainerCMSAD_2x5it_NoMirroring",
                                                       "nnUNetTrainerMMPlain_2x5it_NoMirroring"]
    for row in results["rows"]:
        assert set(row["dice"]) == {"organ", "lesion", "cyst"}
        assert 0.0 <= row["mean_dice"] <= 1.0
        assert (root / "figures" / f"{row['trainer']}.png").is_file()
        assert row["figure"] in out

    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.delenv(name, raising=False)
    assert run_demo(root, quick=True) == 2  # in-process: the refusal comes before any process starts
    assert "refusing to overwrite" in capsys.readouterr().out
