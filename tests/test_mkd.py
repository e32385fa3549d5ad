"""MKD: alignment module, losses, assistant preparation and errors, and the trainer through the console scripts."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from arch_helpers import architecture, configuration
from helpers import DATASET_ID, MKD_FEEDBACK_TRAINER, MKD_PLANS, MKD_TRAINER, TINY_PLANS, run_tool

from nnunet_multimodal.data.mkd_assistant import (
    ASSISTANT_MARK,
    ENTRY_KEY,
    AssistantError,
    check_compatible,
    check_new_plans_identifier,
    find_assistant,
)
from nnunet_multimodal.data.phantoms import PhantomSpec, write_dataset
from nnunet_multimodal.losses.image_alignment import (
    cycle_consistency_loss,
    intensity_distance,
    least_squares_gan_loss,
)
from nnunet_multimodal.losses.mutual_learning import MutualDistillation, prediction_kl
from nnunet_multimodal.networks.mkd import DEFAULT_KNOBS, DiscriminatorPair, ImageAlignmentModule, MKDNet
from nnunet_multimodal.training.base import unwrap_network
from nnunet_multimodal.training.mkd import (
    assistant_batch_size,
    nnUNetTrainerMKD,
    nnUNetTrainerMKD_2x5it_NoMirroring,
    nnUNetTrainerMKD_iamFeedback_2x5it_NoMirroring,
    nnUNetTrainerMKD_kdTemperature2,
    nnUNetTrainerMKD_kdWeight1,
    nnUNetTrainerMKD_noIAM,
    nnUNetTrainerMKD_T2,
)


# ---------------------------------------------------------------- losses
def test_least_squares_gan_loss_by_hand():
    scores = torch.tensor([[[[0.5, 1.0]]]])
    assert least_squares_gan_loss(scores, real=True).item() == pytest.approx((0.25 + 0.0) / 2)
    assert least_squares_gan_loss(scores, real=False).item() == pytest.approx((0.25 + 1.0) / 2)


def test_cycle_consistency_is_mean_absolute_error():
    original = torch.zeros(1, 1, 2, 2)
    reconstructed = torch.tensor([[[[1.0, -1.0], [0.0, 2.0]]]])
    assert cycle_consistency_loss(reconstructed, original).item() == pytest.approx(1.0)


def test_intensity_distance():
    torch.manual_seed(0)
    images = torch.randn(2, 2, 8, 8)
    assert intensity_distance(images, images).item() == pytest.approx(0.0, abs=1e-6)
    assert intensity_distance(images + 0.5, images).item() == pytest.approx(0.5, abs=1e-5)
    shuffled = images.flatten(2)[..., torch.randperm(64)].reshape(2, 2, 8, 8)
    assert intensity_distance(shuffled, images).item() == pytest.approx(0.0, abs=1e-6)  # a distribution distance
    assert intensity_distance(images[:1], images).item() < 0.5                     # batch sizes may differ
    with pytest.raises(ValueError, match="channel"):
        intensity_distance(images[:, :1], images)


def test_mutual_distillation_by_hand():
    # one voxel, two classes: p = (1/2, 1/2), q = (3/4, 1/4)
    a = torch.tensor([0.0, 0.0]).view(1, 2, 1, 1)
    b = torch.tensor([math.log(3.0), 0.0]).view(1, 2, 1, 1)
    kl_pq = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    kl_qp = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert MutualDistillation(1.0)(a, b).item() == pytest.approx(kl_pq + kl_qp, rel=1e-5)
    assert MutualDistillation(1.0)(a, a).item() == pytest.approx(0.0, abs=1e-7)


def test_mutual_distillation_teachers_are_detached():
    torch.manual_seed(1)
    a = torch.randn(2, 3, 4, 4, requires_grad=True)
    b = torch.randn(2, 3, 4, 4, requires_grad=True)
    MutualDistillation(2.0)(a, b).backward()
    # a's gradient comes only from the term where a is the student (b the detached teacher), and vice versa
    a_student = a.detach().clone().requires_grad_(True)
    prediction_kl(a_student, b, 2.0).mean().backward()
    assert torch.allclose(a.grad, a_student.grad, atol=1e-6)
    b_student = b.detach().clone().requires_grad_(True)
    prediction_kl(b_student, a, 2.0).mean().backward()
    assert torch.allclose(b.grad, b_student.grad, atol=1e-6)


def test_mutual_distillation_masks_ignored_voxels_and_rejects_bad_temperature():
    a, b = torch.zeros(1, 2, 1, 2), torch.zeros(1, 2, 1, 2)
    b[0, 0, 0, 1] = 5.0  # the two predictions differ only in the second voxel
    valid = torch.tensor([[[[1.0, 0.0]]]])
    assert MutualDistillation()(a, b, valid).item() == pytest.approx(0.0, abs=1e-7)
    assert MutualDistillation()(a, b).item() > 0
    assert MutualDistillation(regions=True)(a, b).item() > 0
    with pytest.raises(ValueError, match="temperature"):
        MutualDistillation(0.0)


# ---------------------------------------------------------------- networks
def _mkd_net(dim=2, deep_supervision=True):
    return nnUNetTrainerMKD.build_multimodal_network(configuration(dim=dim), 1, 0, 3, deep_supervision, DEFAULT_KNOBS)


def test_mkd_net_trains_both_segmentors_and_predicts_their_ensemble():
    torch.manual_seed(0)
    net = _mkd_net()
    x = torch.randn(2, 1, 16, 16)
    out = net(x)
    assert set(out) == {"logits", "assistant_logits"}
    assert [o.shape[-1] for o in out["logits"]] == [16, 8]  # deep supervision levels
    net.eval()
    net.set_deep_supervision(False)
    with torch.no_grad():
        ensemble = net(x)
        assert torch.allclose(ensemble, (net.target(x) + net.assistant(x)) / 2)
    assert not any(k.startswith(("iam", "discriminators")) for k in net.state_dict())


@pytest.mark.parametrize("dim", [2, 3])
def test_alignment_module_and_discriminators_shapes(dim):
    arch = architecture(dim=dim)
    iam, discriminators = ImageAlignmentModule(arch, 2, DEFAULT_KNOBS), DiscriminatorPair(arch, 2, DEFAULT_KNOBS)
    assistant, target = torch.randn(1, 2, *[16] * dim), torch.randn(3, 2, *[16] * dim)
    images = iam(assistant, target)
    assert images["aligned"].shape == images["reconstructed_assistant"].shape == assistant.shape
    assert images["target_as_assistant"].shape == images["reconstructed_target"].shape == target.shape
    scores_target, scores_assistant = discriminators(target, assistant)
    assert scores_target.shape == (3, 1, *[4] * dim)
    assert scores_assistant.shape == (1, 1, *[4] * dim)


def test_alignment_knobs_are_checked():
    with pytest.raises(ValueError, match="generator_width"):
        ImageAlignmentModule(architecture(), 1, dict(DEFAULT_KNOBS, generator_width=0))


@pytest.mark.parametrize("batch, share, expected", [(4, 0.5, (2, 2)), (2, 0.5, (1, 1)), (1, 0.5, (1, 1)),
                                                    (5, 0.2, (4, 1))])
def test_batch_is_shared_between_streams(batch, share, expected):
    assert assistant_batch_size(batch, share) == expected


# ---------------------------------------------------------------- assistant preparation
def test_mkd_prepare_keeps_the_assistants_own_normalisation(workspace, mkd_assistant):
    mkd_plans = json.loads(mkd_assistant.read_text())
    entry = mkd_plans[ENTRY_KEY]
    assert mkd_plans["plans_name"] == MKD_PLANS == entry["plans"]
    assistant_folder = workspace.preprocessed / entry["dataset"]
    assistant_plans = json.loads((assistant_folder / f"{entry['plans']}.json").read_text())
    own_plans = json.loads((assistant_folder / "nnUNetPlans.json").read_text())
    target_2d, assistant_2d = mkd_plans["configurations"]["2d"], assistant_plans["configurations"]["2d"]
    assert target_2d["normalization_schemes"] == ["ZScoreNormalization"] * 3
    assert assistant_2d["normalization_schemes"] == ["CTNormalization", "ZScoreNormalization", "ZScoreNormalization"]
    assert assistant_plans["foreground_intensity_properties_per_channel"] == \
        own_plans["foreground_intensity_properties_per_channel"]
    assert assistant_2d["spacing"] == target_2d["spacing"]
    assert assistant_2d["patch_size"] == target_2d["patch_size"]
    assert assistant_plans[ASSISTANT_MARK] == mkd_assistant.parent.name
    cases = list((assistant_folder / entry["data_identifier"]["2d"]).glob("*.pkl"))
    assert len(cases) == 8


def test_mkd_prepare_writes_target_segmentor_inference(mkd_assistant):
    knobs = json.loads(mkd_assistant.read_text())["configurations"]["2d"]["multimodal"]["mkd"]
    assert knobs == {"ensemble": "target_segmentor"}


def test_find_assistant_errors(workspace, nnunet_paths, phantom_dataset, mkd_assistant, tmp_path):
    plans = json.loads(mkd_assistant.read_text())
    dataset_json = json.loads((phantom_dataset / "dataset.json").read_text())
    assert find_assistant(plans, "2d", dataset_json).dataset.endswith("TestPhantomAssistant")

    with pytest.raises(AssistantError, match="mkd-prepare"):
        find_assistant({k: v for k, v in plans.items() if k != ENTRY_KEY}, "2d", dataset_json)
    with pytest.raises(AssistantError, match="prepared for"):
        find_assistant(dict(plans, **{ENTRY_KEY: dict(plans[ENTRY_KEY], data_identifier={})}), "2d", dataset_json)
    unprepared = dict(plans[ENTRY_KEY], data_identifier={"2d": "never_preprocessed"})
    with pytest.raises(AssistantError, match=rf"not preprocessed.*-p {TINY_PLANS} -c 2d -o {MKD_PLANS}` again"):
        find_assistant(dict(plans, **{ENTRY_KEY: unprepared}), "2d", dataset_json)
    other_patch = json.loads(mkd_assistant.read_text())
    other_patch["configurations"]["2d"]["patch_size"] = [32, 32]
    with pytest.raises(AssistantError, match="patch_size"):
        find_assistant(other_patch, "2d", dataset_json)
    with pytest.raises(AssistantError, match="labels"):
        find_assistant(plans, "2d", dict(dataset_json, labels={"background": 0, "organ": 1}))


def test_new_plans_identifier_never_replaces_plans_the_user_has(tmp_path):
    with pytest.raises(AssistantError, match="'__'"):
        check_new_plans_identifier("a__b", "nnUNetPlans", "nnUNetPlans", tmp_path)
    with pytest.raises(AssistantError, match="target's own plans"):
        check_new_plans_identifier("P", "P", "nnUNetPlans", tmp_path)
    with pytest.raises(AssistantError, match="assistant's own plans"):
        check_new_plans_identifier("A", "P", "A", tmp_path)
    (tmp_path / "Other.json").write_text(json.dumps({"plans_name": "Other"}))
    with pytest.raises(AssistantError, match="Other.json exists and was not written by mkd-prepare"):
        check_new_plans_identifier("Other", "P", "A", tmp_path)
    (tmp_path / "Ours.json").write_text(json.dumps({"plans_name": "Ours", ASSISTANT_MARK: "Dataset001_T"}))
    check_new_plans_identifier("Ours", "P", "A", tmp_path)      # preparing again replaces our own


def test_check_compatible_channels_and_labels():
    target = {"labels": {"background": 0, "heart": 1}, "channel_names": {"0": "CT"}}
    check_compatible(target, dict(target, channel_names={"0": "MR"}), "T", "A")
    with pytest.raises(AssistantError, match="input channel"):
        check_compatible(target, dict(target, channel_names={"0": "T1", "1": "T2"}), "T", "A")
    with pytest.raises(AssistantError, match="labels"):
        check_compatible(target, dict(target, labels={"background": 0, "lung": 1}), "T", "A")


def test_mkd_prepare_errors_name_the_fix(workspace, phantom_dataset):
    write_dataset(workspace.raw, 903, "TestUnplanned", PhantomSpec(shape=(32, 32), seed=2), num_training=2)
    result = run_tool(["nnunet-mm", "mkd-prepare", "-d", DATASET_ID, "-a", 903, "-p", TINY_PLANS], workspace.env,
                      check=False)
    assert result.returncode == 2
    assert "--no_pp" in result.stderr
    assert "Dataset903_TestUnplanned" in result.stderr
    result = run_tool(["nnunet-mm", "mkd-prepare", "-d", DATASET_ID, "-a", DATASET_ID, "-p", TINY_PLANS],
                      workspace.env, check=False)
    assert result.returncode == 2
    assert "another dataset" in result.stderr


def test_trainer_without_assistant_fails_before_writing(workspace, phantom_dataset):
    result = run_tool(["nnUNetv2_train", DATASET_ID, "2d", "0", "-tr", MKD_TRAINER, "-p", TINY_PLANS, "-device", "cpu"],
                      workspace.env, check=False)
    assert result.returncode != 0
    assert "mkd-prepare" in result.stderr
    assert not (workspace.results / phantom_dataset.name / f"{MKD_TRAINER}__{TINY_PLANS}__2d").exists()


# ---------------------------------------------------------------- trained model
def test_trained_mkd_model_logs_and_checkpoint(trained_mkd_model):
    checkpoint = torch.load(trained_mkd_model / "checkpoint_final.pth", weights_only=False)
    assert checkpoint["trainer_name"] == MKD_FEEDBACK_TRAINER
    assert set(checkpoint["extra_modules"]) == set(checkpoint["extra_optimizers"]) == {"iam", "discriminators"}
    assert {k.split(".")[0] for k in checkpoint["network_weights"]} == {"target", "assistant"}
    stamp = checkpoint["nnunet_multimodal"]["knobs"]
    assert stamp["assistant"]["dataset"].endswith("TestPhantomAssistant")
    assert stamp["kd_temperature"] == 1.0
    assert stamp["iam_segmentation_feedback"] == 1.0
    logs = checkpoint["logging"]
    for key in ("loss_seg", "loss_seg_assistant", "loss_kd_target", "loss_kd_aligned", "loss_adversarial",
                "loss_cycle", "loss_discriminator", "alignment_distance", "alignment_distance_unaligned"):
        assert len(logs[key]) == 2, key
        assert all(math.isfinite(v) for v in logs[key]), key
    assert (trained_mkd_model / "alignment.png").stat().st_size > 0
    assert (trained_mkd_model / "progress_loss_terms.png").exists()


def _in_process_trainer(model_folder, fold: int, trainer_class=nnUNetTrainerMKD_2x5it_NoMirroring):
    plans = json.loads((model_folder.parent / "plans.json").read_text())
    plans["continue_training"] = False
    dataset_json = json.loads((model_folder.parent / "dataset.json").read_text())
    return trainer_class(plans, "2d", fold, dataset_json, torch.device("cpu"))


def test_alignment_moves_toward_the_target_appearance(trained_mkd_model, nnunet_paths):
    torch.manual_seed(0)
    np.random.seed(0)  # nnU-Net's loaders sample with numpy
    trainer = _in_process_trainer(trained_mkd_model, fold=1)
    trainer.initialize()
    target_loader, _ = trainer.get_dataloaders()
    weights = trainer.current_loss_weights()
    distances, cycles = [], []
    for _ in range(40):
        target = next(target_loader)["data"]
        assistant = next(trainer.dataloader_assistant)["data"]
        aligned, losses = trainer.alignment_step(assistant, target, weights)
        distances.append(intensity_distance(aligned, target).item())
        cycles.append(losses["cycle"].item())
    assert sum(cycles[-5:]) < sum(cycles[:5])
    assert sum(distances[-5:]) < 0.9 * sum(distances[:5])


def test_mkd_checkpoint_restores_every_part(trained_mkd_model, nnunet_paths):
    checkpoint = torch.load(trained_mkd_model / "checkpoint_final.pth", weights_only=False)
    # the checkpoint's own trainer: load_checkpoint refuses another trainer's checkpoint
    trainer = _in_process_trainer(trained_mkd_model, 1, nnUNetTrainerMKD_iamFeedback_2x5it_NoMirroring)
    trainer.load_checkpoint(checkpoint)
    for name, module in trainer.extra_modules.items():
        for key, value in module.state_dict().items():
            assert torch.equal(value, checkpoint["extra_modules"][name][key]), (name, key)
    for name, optimizer in trainer.extra_optimizers.items():
        assert optimizer.state_dict()["state"].keys() == checkpoint["extra_optimizers"][name]["state"].keys()
        assert len(optimizer.state_dict()["state"]) > 0
    for key, value in trainer.network.state_dict().items():
        assert torch.equal(value, checkpoint["network_weights"][key])
    assert trainer.current_epoch == checkpoint["current_epoch"]


def test_mkd_predicts_with_the_prepared_inference(workspace, nnunet_paths, phantom_dataset, trained_mkd_model,
                                                  tmp_path):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    output = tmp_path / "predictions"
    run_tool(["nnUNetv2_predict", "-i", phantom_dataset / "imagesTs", "-o", output, "-d", DATASET_ID, "-c", "2d",
              "-f", "0", "-tr", MKD_FEEDBACK_TRAINER, "-p", MKD_PLANS, "-device", "cpu", "--disable_tta", "-npp", 1,
              "-nps", 1], workspace.env)
    assert len(list(output.glob("*.nii.gz"))) == 2
    predictor = nnUNetPredictor(device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(trained_mkd_model.parent), (0,), "checkpoint_final.pth")
    network = predictor.network
    assert isinstance(network, MKDNet)
    network.load_state_dict(predictor.list_of_parameters[0])
    network.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():  # mkd-prepare's plans ask for the target segmentor alone
        torch.testing.assert_close(network(x), network.target(x))


def _forced_foreground_rate(loader, batches: int = 3000) -> float:
    return float(np.mean([loader.get_do_oversample(i) for _ in range(batches) for i in range(loader.batch_size)]))


@pytest.mark.parametrize("plans_batch", [1, 2, 3, 4])
def test_each_stream_draws_foreground_at_nnunets_rate_whatever_its_share_of_the_batch(plans_batch):
    from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader

    np.random.seed(0)
    cases = SimpleNamespace(identifiers=["case_0", "case_1"])   # what a loader reads of its dataset when built
    labels = SimpleNamespace(all_labels=[0, 1], has_ignore_label=False)
    for stream_batch in assistant_batch_size(plans_batch, nnUNetTrainerMKD.assistant_share):
        loader = nnUNetDataLoader(cases, stream_batch, (8, 8), (8, 8), labels, oversample_foreground_percent=0.33,
                                  probabilistic_oversampling=True)
        assert _forced_foreground_rate(loader) == pytest.approx(0.33, abs=0.03), stream_batch


def test_both_loaders_of_the_trainer_draw_foreground_per_sample(trained_mkd_model, nnunet_paths):
    trainer = _in_process_trainer(trained_mkd_model, fold=1)
    trainer.initialize()
    target, _ = trainer.get_dataloaders()
    for augmenter in (target, trainer.dataloader_assistant):
        loader = getattr(augmenter, "data_loader", None) or augmenter.generator
        assert loader.get_do_oversample == loader._probabilistic_oversampling


def test_the_old_temperature_trainer_name_warns_and_trains_as_the_new_one(trained_mkd_model, nnunet_paths):
    with pytest.warns(FutureWarning, match="renamed nnUNetTrainerMKD_kdTemperature2"):
        trainer = _in_process_trainer(trained_mkd_model, 1, nnUNetTrainerMKD_T2)
    assert isinstance(trainer, nnUNetTrainerMKD_kdTemperature2)
    assert trainer.kd_temperature == 2.0


def _weights(trainer_class) -> dict[str, float]:
    return {term.name: term.weight for term in trainer_class.extra_loss_terms}


def test_both_distillation_terms_weigh_one_tenth_by_default():
    assert {k: v for k, v in _weights(nnUNetTrainerMKD).items() if k.startswith("kd_")} == {"kd_target": 0.1,
                                                                                          "kd_aligned": 0.1}


def test_kd_weight_1_changes_only_the_distillation_weights():
    expected = {**_weights(nnUNetTrainerMKD), "kd_target": 1.0, "kd_aligned": 1.0}
    assert _weights(nnUNetTrainerMKD_kdWeight1) == expected


def test_the_variant_without_alignment_distils_at_the_default_weight():
    assert _weights(nnUNetTrainerMKD_noIAM)["kd_target"] == _weights(nnUNetTrainerMKD)["kd_target"]


def test_scale_gradient_keeps_the_value():
    from nnunet_multimodal.training.mkd import scale_gradient

    x = torch.tensor([1.5, -2.0], requires_grad=True)
    torch.testing.assert_close(scale_gradient(x, 0.25), x)


def test_scale_gradient_scales_the_gradient():
    from nnunet_multimodal.training.mkd import scale_gradient

    x = torch.tensor([1.5, -2.0], requires_grad=True)
    (3 * scale_gradient(x, 0.25)).sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([0.75, 0.75]))


def _generator_change_in_one_step(model_folder, feedback: float) -> torch.Tensor:
    torch.manual_seed(0)
    np.random.seed(0)  # nnU-Net's loaders sample with numpy
    trainer = _in_process_trainer(model_folder, fold=1)
    trainer.iam_segmentation_feedback = feedback
    trainer.initialize()
    target_loader, _ = trainer.get_dataloaders()
    generator = unwrap_network(trainer.extra_modules["iam"])
    before = [p.detach().clone() for p in generator.parameters()]
    trainer.train_step(next(target_loader))
    return torch.cat([(p.detach() - b).flatten() for p, b in zip(generator.parameters(), before)])


def test_segmentation_feedback_reaches_the_generator(trained_mkd_model, nnunet_paths):
    without = _generator_change_in_one_step(trained_mkd_model, 0.0)
    with_feedback = _generator_change_in_one_step(trained_mkd_model, 1.0)
    assert not torch.allclose(without, with_feedback)


def test_an_ensemble_knob_that_does_not_fit_the_labels_is_refused(trained_mkd_model):
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = json.loads((trained_mkd_model.parent / "plans.json").read_text())
    plans["configurations"]["2d"].setdefault("multimodal", {})["mkd"] = {"ensemble": "sigmoid_probabilities"}
    dataset_json = json.loads((trained_mkd_model.parent / "dataset.json").read_text())
    with pytest.raises(ValueError, match="does not fit this dataset, whose labels get a softmax"):
        nnUNetTrainerMKD.check_architecture(PlansManager(plans), "2d", dataset_json)
