import json
from copy import deepcopy

import pytest
from nnunet_multimodal.plans.derive import derive_plans, parse_knob, resolve_configuration, write_derived_plans

PLAIN_3D = {
    "data_identifier": "nnUNetPlans_3d_fullres",
    "batch_size": 2,
    "patch_size": [80, 160, 160],
    "spacing": [3.0, 0.5, 0.5],
    "architecture": {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": 6, "features_per_stage": [32, 64, 128, 256, 320, 320],
            "kernel_sizes": [[1, 3, 3]] + [[3, 3, 3]] * 5,
            "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]],
            "n_conv_per_stage": [2] * 6, "n_conv_per_stage_decoder": [2] * 5,
        },
        "_kw_requires_import": [],
    },
}
PLANS = {
    "plans_name": "nnUNetPlans",
    "configurations": {
        "3d_fullres": PLAIN_3D,
        "3d_cascade_fullres": {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"},
    },
}


def test_tiny_keeps_data_identifier_and_spacing():
    plans = derive_plans(PLANS, ["3d_fullres"], "nnUNetPlans_mmtiny", tiny=True)
    configuration = plans["configurations"]["3d_fullres"]
    assert plans["plans_name"] == "nnUNetPlans_mmtiny"
    assert configuration["data_identifier"] == "nnUNetPlans_3d_fullres"
    assert configuration["spacing"] == [3.0, 0.5, 0.5]
    arch = configuration["architecture"]["arch_kwargs"]
    assert arch["n_stages"] == 4
    assert arch["features_per_stage"] == [16, 32, 64, 128]
    assert len(arch["strides"]) == len(arch["kernel_sizes"]) == len(arch["n_conv_per_stage"]) == 4
    assert len(arch["n_conv_per_stage_decoder"]) == 3
    # every patch axis divisible by the product of its strides: (1*1*2*2, 1*2*2*2, 1*2*2*2) = (4, 8, 8)
    assert configuration["patch_size"] == [32, 32, 32]
    assert configuration["batch_size"] == 2
    assert PLANS["configurations"]["3d_fullres"] == PLAIN_3D  # source untouched


def test_residual_encoder_plans():
    plans = deepcopy(PLANS)
    arch = plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
    arch["n_blocks_per_stage"] = arch.pop("n_conv_per_stage")
    tiny = derive_plans(plans, ["3d_fullres"], "resenc_tiny", tiny=True)
    assert tiny["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["n_blocks_per_stage"] == [1] * 4


def test_inherited_configuration_is_written_resolved_with_whole_architecture():
    plans = derive_plans(PLANS, ["3d_cascade_fullres"], "p_mm", tiny=False, knobs=["cmsad.levels=[2,3]"])
    configuration = plans["configurations"]["3d_cascade_fullres"]
    assert "inherits_from" not in configuration
    assert configuration["architecture"] == PLAIN_3D["architecture"]
    assert configuration["previous_stage"] == "3d_lowres"
    assert configuration["multimodal"] == {"cmsad": {"levels": [2, 3]}}


def test_knob_values_are_json_or_strings():
    assert parse_knob("maml.width=0.5") == ("maml", "width", 0.5)
    assert parse_knob("sam.variant=vit_b") == ("sam", "variant", "vit_b")
    assert parse_knob("cmsad.bidirectional=true") == ("cmsad", "bidirectional", True)
    for bad in ("width=0.5", "maml.width", ".x=1"):
        with pytest.raises(ValueError, match="SECTION.KNOB=VALUE"):
            parse_knob(bad)


def test_plans_name_without_double_underscore():
    with pytest.raises(ValueError, match="__"):
        derive_plans(PLANS, ["3d_fullres"], "bad__name", tiny=True)


def test_unknown_configuration():
    with pytest.raises(ValueError, match="2d"):
        resolve_configuration(PLANS, "2d")


def test_write_derived_plans(tmp_path):
    (tmp_path / "nnUNetPlans.json").write_text(json.dumps(PLANS))
    target = write_derived_plans(tmp_path, "nnUNetPlans", ["3d_fullres"], "nnUNetPlans_mmtiny", tiny=True)
    assert target.name == "nnUNetPlans_mmtiny.json"
    assert json.loads(target.read_text())["plans_name"] == "nnUNetPlans_mmtiny"
    with pytest.raises(FileNotFoundError, match="nnUNetv2_plan_and_preprocess"):
        write_derived_plans(tmp_path, "absentPlans", ["3d_fullres"], "x", tiny=True)
    with pytest.raises(ValueError, match="no configuration"):
        write_derived_plans(tmp_path, "nnUNetPlans", ["2d"], "x", tiny=True)


def test_configurations_inheriting_from_a_changed_one():
    from nnunet_multimodal.plans.derive import inheriting_configurations

    assert inheriting_configurations(PLANS, ["3d_fullres"]) == ["3d_cascade_fullres"]
    assert inheriting_configurations(PLANS, ["3d_cascade_fullres"]) == []


def test_existing_plans_are_kept_unless_the_result_is_the_same_or_forced(tmp_path):
    (tmp_path / "nnUNetPlans.json").write_text(json.dumps(PLANS))
    with pytest.raises(ValueError, match="is the source plans"):
        write_derived_plans(tmp_path, "nnUNetPlans", ["3d_fullres"], "nnUNetPlans", tiny=True)
    assert json.loads((tmp_path / "nnUNetPlans.json").read_text()) == PLANS
    target = write_derived_plans(tmp_path, "nnUNetPlans", ["3d_fullres"], "mine", tiny=True)
    written = target.read_text()
    assert write_derived_plans(tmp_path, "nnUNetPlans", ["3d_fullres"], "mine", tiny=True) == target  # same: fine
    with pytest.raises(FileExistsError, match=r"other settings \(configurations \['3d_fullres'\]\).*--force"):
        write_derived_plans(tmp_path, "nnUNetPlans", ["3d_fullres"], "mine", tiny=False)
    assert target.read_text() == written
    write_derived_plans(tmp_path, "nnUNetPlans", ["3d_fullres"], "mine", tiny=False, force=True)
    assert json.loads(target.read_text())["configurations"]["3d_fullres"] != json.loads(written)["configurations"][
        "3d_fullres"]


def test_cli_on_real_preprocessed_dataset(preprocessed_folder):
    plans = json.loads((preprocessed_folder / "nnUNetPlans_mmtiny.json").read_text())
    original = json.loads((preprocessed_folder / "nnUNetPlans.json").read_text())
    assert plans["plans_name"] == "nnUNetPlans_mmtiny"
    assert plans["configurations"]["2d"]["data_identifier"] == original["configurations"]["2d"]["data_identifier"]
    assert plans["configurations"]["2d"]["patch_size"] == [64, 64]


def test_knobs_are_checked_when_the_plans_are_written(preprocessed_folder, tmp_path):
    folder = tmp_path / preprocessed_folder.name
    folder.mkdir()
    for name in ("nnUNetPlans.json", "dataset.json"):
        (folder / name).write_text((preprocessed_folder / name).read_text())
    target = write_derived_plans(folder, "nnUNetPlans", ["2d"], "good", tiny=True,
                                 knobs=["maml.branch_width=1.0", "cmsad.scff_levels=[2,3]", "mkd.generator_width=8",
                                        "sam_adapter.variant=vit_h"])
    assert json.loads(target.read_text())["configurations"]["2d"]["multimodal"]["maml"] == {"branch_width": 1.0}
    for knob, message in (("maml.min_branch_features=0", "min_branch_features must be a positive integer"),
                          ("cmsad.scff_levels=5", "scff_levels must be 'auto' or a list"),
                          ("cmsad.scff_levels=[9]", r"scff_levels \[9\] out of range"),
                          ("cmsad.branch_wdith=0.5", "Unknown knob"),
                          ("mkd.discriminator_width=-1", "discriminator_width must be a positive integer"),
                          ("sam_adapter.input_size=100", "input_size must be a multiple of 16"),
                          ("cmsad.attention_dim=0", "attention_dim must be a positive integer"),
                          ("cmsad.attention_max_tokens=-1", "attention_max_tokens must be a non-negative integer"),
                          ("maml.instance_norm=fast", "instance_norm knob must be one of"),
                          ("sam_adapter.adapter_heads=0", "adapter_heads must be a positive integer"),
                          ("sam_adapter.adapter_ratio=0", r"adapter_ratio must be a number in \(0, 1\]"),
                          ("sam_adapter.decoder_channels=[16,0]", "decoder_channels must be a positive integer"),
                          ("sam_adapter.unfreeze_last_blocks=\"2\"", "unfreeze_last_blocks must be a non-negative"),
                          ("mmal.branch_width=0.5", "unknown knob section 'mmal'")):
        with pytest.raises(ValueError, match=message):
            write_derived_plans(folder, "nnUNetPlans", ["2d"], "bad", tiny=True, knobs=[knob])
        assert not (folder / "bad.json").exists()


def test_a_network_that_cannot_run_a_patch_is_refused_naming_the_configuration(preprocessed_folder):
    import torch
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_multimodal.training.base import nnUNetTrainerMultiModalBase

    class OneChannelNetwork(nnUNetTrainerMultiModalBase):
        @classmethod
        def build_multimodal_network(cls, *args):
            return torch.nn.Conv2d(1, 1, 3)     # the dataset has more channels: builds, but cannot run a patch

    plans = PlansManager(json.loads((preprocessed_folder / "nnUNetPlans.json").read_text()))
    dataset_json = json.loads((preprocessed_folder / "dataset.json").read_text())
    with pytest.raises(ValueError, match="OneChannelNetwork network of configuration '2d' cannot run a patch"):
        OneChannelNetwork.check_architecture(plans, "2d", dataset_json)
