"""The plans and configuration check every benchmark runs before it trains or measures anything."""

import json

import pytest

from nnunet_multimodal.benchmarks.plans_check import check_single_stage_configuration


@pytest.fixture
def cascade_plans(tmp_path):
    """Plans with nnU-Net's three 3D configurations, the cascade stage inheriting from 3d_fullres."""
    configurations = {"3d_fullres": {"architecture": {}},
                      "3d_lowres": {"architecture": {}, "next_stage": "3d_cascade_fullres"},
                      "3d_cascade_fullres": {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"},
                      "3d_cascade_custom": {"inherits_from": "3d_cascade_fullres"}}
    (tmp_path / "P.json").write_text(json.dumps({"configurations": configurations}))
    return tmp_path


@pytest.mark.parametrize("configuration", ["3d_fullres", "3d_lowres"])
def test_a_single_stage_configuration_is_accepted(cascade_plans, configuration):
    check_single_stage_configuration(cascade_plans, "P", configuration, "speed")


def test_a_cascade_stage_is_refused_naming_its_previous_stage(cascade_plans):
    with pytest.raises(ValueError, match=r"3d_cascade_fullres in .*P.json is a cascade stage \(it takes 3d_lowres"):
        check_single_stage_configuration(cascade_plans, "P", "3d_cascade_fullres", "speed")


def test_a_configuration_inheriting_a_cascade_stage_is_refused(cascade_plans):
    with pytest.raises(ValueError, match="is a cascade stage"):
        check_single_stage_configuration(cascade_plans, "P", "3d_cascade_custom", "speed")


def test_a_configuration_not_in_the_plans_is_refused_listing_those_there(cascade_plans):
    with pytest.raises(ValueError, match="'2d' is not in .*P.json: pass -c with one of 3d_fullres, 3d_lowres"):
        check_single_stage_configuration(cascade_plans, "P", "2d", "speed")


@pytest.mark.parametrize("text", ['{"configurations": ', '{"plans_name": "Q"}', "[]"])
def test_unreadable_plans_are_refused_naming_the_file(tmp_path, text):
    (tmp_path / "Q.json").write_text(text)
    with pytest.raises(ValueError, match=r"Q.json is no usable nnU-Net plans file"):
        check_single_stage_configuration(tmp_path, "Q", "2d", "speed")


def test_missing_plans_are_refused_naming_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Q.json does not exist: plan and preprocess"):
        check_single_stage_configuration(tmp_path, "Q", "2d", "speed")


def test_the_cascade_error_names_the_benchmark_and_its_advice(cascade_plans):
    with pytest.raises(ValueError, match=r"benchmark accuracy runs single-stage configurations; pass -c 3d_lowres "
                                         r"or 3d_fullres, or score it otherwise$"):
        check_single_stage_configuration(cascade_plans, "P", "3d_cascade_fullres", "accuracy",
                                         ", or score it otherwise")
