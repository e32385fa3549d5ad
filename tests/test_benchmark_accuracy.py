"""`nnunet-mm benchmark accuracy` on a tiny budget: it runs, writes its page section, and the tables parse."""

import json

import pytest
from helpers import CMSAD_TRAINER, DATASET_ID, PLAIN_TRAINER, TINY_PLANS, run_tool

from nnunet_multimodal.benchmarks.accuracy import check_same_budget, key_names, replace_section
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


def test_runner_on_trained_tiny_models(workspace, phantom_dataset, trained_cmsad_model, trained_plain_model, tmp_path):
    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n")
    result = run_tool(["nnunet-mm", "benchmark", "accuracy", "-d", DATASET_ID, "-c", "2d", "-p", TINY_PLANS, "-tr",
                       PLAIN_TRAINER, CMSAD_TRAINER, "-o", tmp_path / "out", "--missing-sweep", "--page", page,
                       "--name", "phantom_2d"], workspace.env)
    assert "reusing" in result.stdout  # the fixtures' checkpoints, not a new training run
    report = json.loads((tmp_path / "out" / "accuracy.json").read_text())
    assert [row["trainer"] for row in report["rows"]] == [PLAIN_TRAINER, CMSAD_TRAINER]
    assert report["keys"] == ["1", "2", "3"]
    assert report["cases"] == 2
    assert list(report["names"].values()) == ["organ", "lesion", "cyst"]
    for row in report["rows"]:
        assert row["budget"]["iterations"] == 10
        assert 0 <= row["mean_dice"] <= 1
        assert len(row["missing"]) == 7 + 1  # every non-empty subset of 3 modalities, and their mean
    text = page.read_text()
    assert "<!-- accuracy:phantom_2d -->" in text
    assert "nnunet-mm benchmark accuracy -d 901" in text
    results_table, sweep_table = parse_markdown_tables(text)
    assert results_table[0][:3] == ["trainer", "iterations (epochs × it)", "batch"]
    assert len(results_table) == 3
    assert len(sweep_table) == 1 + 8
    assert (tmp_path / "accuracy_phantom_2d.png").stat().st_size > 0
