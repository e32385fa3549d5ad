"""`nnunet-mm benchmark accuracy` on a tiny budget: it runs, writes its page section, and the tables parse."""

import json
import math

import pytest
from helpers import CMSAD_TRAINER, DATASET_ID, PLAIN_TRAINER, TINY_PLANS, run_tool

from nnunet_multimodal.benchmarks.accuracy import (
    aggregate,
    check_folds,
    check_no_duplicates,
    check_report_name,
    check_same_budget,
    key_names,
    mean_and_sd,
    paired_counts,
    repeat_results,
    replace_section,
    run_identity,
    stored_run,
)
from nnunet_multimodal.text_table import markdown_table


def parse_markdown_tables(text: str) -> list[list[list[str]]]:
    """Every table in ``text`` as rows of cells (the separator row dropped); rows must have the header's width."""
    tables, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= {"-"} and c for c in cells):
                current.append(cells)
        elif current:
            assert all(len(row) == len(current[0]) for row in current), current
            tables.append(current)
            current = []
    return tables


def test_markdown_table_round_trip():
    rows = [["trainer", "Dice 1"], ["`A`", "0.900"], ["`B`", "0.800"]]
    assert parse_markdown_tables(markdown_table(rows)) == [rows]


def test_section_is_appended_then_replaced_in_place(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Benchmarks\n\nhand-written text\n")
    replace_section(page, "A", "first table\n")
    replace_section(page, "B", "other section\n")
    replace_section(page, "A", "second table\n")
    text = page.read_text()
    assert text.startswith("# Benchmarks\n\nhand-written text\n")
    assert "second table" in text
    assert "first table" not in text
    assert "other section" in text
    assert text.index("<!-- accuracy:A -->") < text.index("<!-- accuracy:B -->")
    assert not list(tmp_path.glob(".*.partial*"))


def test_label_and_region_names_by_evaluation_key():
    names = key_names({"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]})
    assert names["(1, 2, 3)"] == "whole tumor"
    assert names["(2, 3)"] == "tumor core"
    assert names["3"] == "enhancing tumor"
    assert key_names({"background": 0, "organ": 1})["1"] == "organ"


def test_different_budgets_are_refused():
    rows = [{"trainer": "A", "budget": {"iterations": 10}}, {"trainer": "B", "budget": {"iterations": 500}}]
    with pytest.raises(ValueError, match="different iteration budgets.*allow-different-budgets"):
        check_same_budget(rows)


def test_different_budgets_within_one_trainer_are_refused():
    rows = [{"trainer": "A", "budget": {"iterations": 10}}, {"trainer": "A", "budget": {"iterations": 500}},
            {"trainer": "B", "budget": {"iterations": 500}}]
    with pytest.raises(ValueError, match=r"'A': \[10, 500\]"):
        check_same_budget(rows)


def test_a_fold_outside_the_split_is_refused(tmp_path):
    (tmp_path / "splits_final.json").write_text(json.dumps([{"train": [], "val": []}] * 3))
    with pytest.raises(ValueError, match=r"\['3'\] do not exist: .*splits_final.json has folds 0 to 2"):
        check_folds(["0", "3"], tmp_path)


def test_fold_all_and_the_default_split_folds_are_accepted(tmp_path):
    check_folds(["all", "4"], tmp_path)


def test_a_trainer_given_twice_is_refused():
    with pytest.raises(ValueError, match="-tr lists A more than once"):
        check_no_duplicates(["A", "B", "A"], "-tr")


@pytest.mark.parametrize("name", ["runs/brats", "..", "a--b", "", "-x"])
def test_a_name_that_is_not_one_file_name_stem_is_refused(name):
    with pytest.raises(ValueError, match="is not usable"):
        check_report_name(name)


def test_a_name_with_dots_dashes_and_underscores_is_accepted():
    check_report_name("brats_2d-tiny.v2")


def test_cli_refuses_a_bad_name_before_training(tmp_path, capsys):
    from nnunet_multimodal.cli import main

    assert main(["benchmark", "accuracy", "-d", "999", "-tr", "A", "-o", str(tmp_path / "out"),
                 "--name", "runs/brats"]) == 2
    assert "--name 'runs/brats' is not usable" in capsys.readouterr().err


def test_mean_and_sd_ignore_nan():
    assert mean_and_sd([0.5, float("nan"), 0.7]) == pytest.approx((0.6, 0.1414213562))


def test_one_run_has_no_sd():
    assert math.isnan(mean_and_sd([0.5])[1])


def test_no_value_gives_nan():
    assert all(v != v for v in mean_and_sd([float("nan")]))


def run(repeat, fold, case_dice, dice=0.5):
    return {"repeat": repeat, "fold": fold, "case_dice": case_dice, "budget": {"iterations": 10},
            "dice": {"1": dice}, "hd95": {"1": 2.0}, "mean_dice": dice, "mean_hd95": 2.0}


def test_paired_counts_compare_the_same_case_of_the_same_fold_and_repeat():
    baseline = [run(1, "0", {"a": 0.5, "b": 0.5}), run(1, "1", {"a": 0.9, "b": 0.1})]
    method = [run(1, "1", {"a": 0.8, "b": 0.1 + 0.001}), run(1, "0", {"a": 0.6, "b": 0.5})]
    assert paired_counts(method, baseline) == {"better": 1, "worse": 1, "tied": 2,
                                               "mean_difference": pytest.approx((0.1 - 0.1 + 0.001) / 4)}


def test_paired_counts_refuse_runs_evaluated_on_different_cases():
    with pytest.raises(ValueError, match=r"fold 0: .*different cases \(\['c'\] in one only\)"):
        paired_counts([run(1, "0", {"a": 0.5, "c": 0.5})], [run(1, "0", {"a": 0.5})])


def test_paired_counts_skip_cases_without_a_dice():
    counts = paired_counts([run(1, "0", {"a": float("nan"), "b": 0.7})], [run(1, "0", {"a": 0.2, "b": 0.5})])
    assert counts["better"] + counts["worse"] + counts["tied"] == 1


def test_aggregate_gives_mean_and_sd_over_runs():
    row = aggregate("T", [run(1, "0", {}, dice=0.4), run(2, "0", {}, dice=0.6)], ["1"])
    assert (row["runs"], row["dice"]["1"], row["dice_sd"]["1"]) == (2, pytest.approx(0.5), pytest.approx(0.1414213562))


def test_first_repeat_trains_into_nnunet_results_and_later_ones_into_the_output_folder(tmp_path):
    assert [repeat_results(tmp_path / "results", tmp_path / "out", r) for r in (1, 2)] == [
        tmp_path / "results", tmp_path / "out" / "repeat_2" / "nnUNet_results"]


SETTINGS = {"labels_or_regions": "[1, 2]", "ignore_label": None, "device": "cpu"}


def identity_of(tmp_path, missing_sweep=False, settings=SETTINGS):
    return run_identity(tmp_path / "checkpoint_final.pth", tmp_path / "images", tmp_path / "labels", missing_sweep,
                        settings)


@pytest.fixture
def stored(tmp_path):
    checkpoint = tmp_path / "checkpoint_final.pth"
    checkpoint.write_bytes(b"weights")
    for folder, name in (("images", "case_0000.nii.gz"), ("labels", "case.nii.gz")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / name).write_bytes(b"voxels")
    record = tmp_path / "run.json"
    record.write_text(json.dumps({"identity": identity_of(tmp_path), "run": {"mean_dice": 0.5}}))
    return checkpoint, record


def test_a_stored_run_is_reused_while_its_checkpoint_is_unchanged(stored, tmp_path):
    assert stored_run(stored[1], identity_of(tmp_path)) == {"mean_dice": 0.5}


def test_a_stored_run_of_a_retrained_checkpoint_is_not_reused(stored, tmp_path):
    checkpoint, record = stored
    checkpoint.write_bytes(b"other weights")
    assert stored_run(record, identity_of(tmp_path)) is None


def test_a_stored_run_without_the_sweep_is_not_reused_for_one_with_it(stored, tmp_path):
    assert stored_run(stored[1], identity_of(tmp_path, missing_sweep=True)) is None


def test_a_stored_run_with_the_sweep_serves_one_without_it(stored, tmp_path):
    _, record = stored
    record.write_text(json.dumps({"identity": identity_of(tmp_path, missing_sweep=True),
                                  "run": {"mean_dice": 0.5, "missing": {"T1": {"1": 0.4}}}}))
    assert stored_run(record, identity_of(tmp_path)) == {"mean_dice": 0.5}


def test_a_stored_run_is_not_reused_after_a_held_out_case_was_added(stored, tmp_path):
    (tmp_path / "labels" / "other.nii.gz").write_bytes(b"voxels")
    assert stored_run(stored[1], identity_of(tmp_path)) is None


def test_a_stored_run_is_not_reused_with_other_regions(stored, tmp_path):
    assert stored_run(stored[1], identity_of(tmp_path, settings={**SETTINGS, "labels_or_regions": "[1]"})) is None


def test_runner_on_trained_tiny_models(workspace, phantom_dataset, trained_cmsad_model, trained_plain_model, tmp_path):
    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n")
    earlier = tmp_path / "out" / "predictions" / PLAIN_TRAINER / "repeat_1" / "fold_0"
    earlier.mkdir(parents=True)
    (earlier / "no_longer_held_out.nii.gz").write_bytes(b"an earlier run's prediction")
    result = run_tool(["nnunet-mm", "benchmark", "accuracy", "-d", DATASET_ID, "-c", "2d", "-p", TINY_PLANS, "-tr",
                       PLAIN_TRAINER, CMSAD_TRAINER, "-o", tmp_path / "out", "--missing-sweep", "--page", page,
                       "--name", "phantom_2d"], workspace.env)
    assert "reusing" in result.stdout  # the fixtures' checkpoints, not a new training run
    report = json.loads((tmp_path / "out" / "accuracy_phantom_2d.json").read_text())
    assert [row["trainer"] for row in report["rows"]] == [PLAIN_TRAINER, CMSAD_TRAINER]
    assert report["keys"] == ["1", "2", "3"]
    assert report["cases"] == 2
    assert list(report["names"].values()) == ["organ", "lesion", "cyst"]
    assert (report["folds"], report["repeats"], report["baseline"]) == (["0"], 1, PLAIN_TRAINER)
    assert "no_longer_held_out.nii.gz" not in report["runs"][PLAIN_TRAINER][0]["case_dice"]
    assert set(report["rows"][1]["paired"]) == {"better", "worse", "tied", "mean_difference"}
    for row in report["rows"]:
        assert row["budget"]["iterations"] == 10
        assert 0 <= row["mean_dice"] <= 1
        assert len(row["missing"]) == 7 + 1  # every non-empty subset of 3 modalities, and their mean
    text = page.read_text()
    assert "<!-- accuracy:phantom_2d -->" in text
    assert "nnunet-mm benchmark accuracy -d 901" in text
    results_table, sweep_table = parse_markdown_tables(text)
    assert results_table[0][:3] == ["trainer", "iterations (epochs × it)", "batch"]
    assert results_table[1][-1] == "(baseline)"
    assert len(results_table) == 3
    assert len(sweep_table) == 1 + 8
    assert (tmp_path / "accuracy_phantom_2d.png").stat().st_size > 0

    again = run_tool(["nnunet-mm", "benchmark", "accuracy", "-d", DATASET_ID, "-c", "2d", "-p", TINY_PLANS, "-tr",
                      PLAIN_TRAINER, CMSAD_TRAINER, "-o", tmp_path / "out", "--missing-sweep"], workspace.env)
    assert again.stdout.count("reusing the results in") == 2  # nothing predicted again
    default_name = tmp_path / "out" / f"accuracy_{phantom_dataset.name}_2d.json"
    assert json.loads(default_name.read_text())["rows"] == report["rows"]

    without_sweep = run_tool(["nnunet-mm", "benchmark", "accuracy", "-d", DATASET_ID, "-c", "2d", "-p", TINY_PLANS,
                              "-tr", PLAIN_TRAINER, CMSAD_TRAINER, "-o", tmp_path / "out", "--name", "no_sweep"],
                             workspace.env)
    assert without_sweep.stdout.count("reusing the results in") == 2  # the runs stored with the sweep serve it


def test_runner_keeps_each_named_report(workspace, phantom_dataset, trained_plain_model, tmp_path):
    for name in ("first", "second"):
        run_tool(["nnunet-mm", "benchmark", "accuracy", "-d", DATASET_ID, "-c", "2d", "-p", TINY_PLANS, "-tr",
                  PLAIN_TRAINER, "-o", tmp_path / "out", "--name", name], workspace.env)
    assert (tmp_path / "out" / "accuracy_first.json").is_file()
