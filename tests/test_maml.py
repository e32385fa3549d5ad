import copy
import json
import math

import pytest
import torch
from arch_helpers import architecture, assert_same_function
from helpers import DATASET_ID, MAML_TRAINER, PLAIN_TRAINER, TINY_PLANS, run_tool

from nnunet_multimodal.losses.mutual_learning import MutualLearningKL, prediction_kl
from nnunet_multimodal.networks.branches import branch_inputs, split_branches
from nnunet_multimodal.networks.maml import MAMLNet, decode_grouped
from nnunet_multimodal.networks.scff import availability_weights
from nnunet_multimodal.networks.segmentation_head import SegmentationHead


def make(dim=2, modalities=3, ds=True, kind="PlainConvUNet", **knobs):
    torch.manual_seed(0)
    return MAMLNet(architecture(dim=dim, kind=kind), modalities, 0, 3, ds, knobs)


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("modalities", [2, 3, 4])
def test_fused_and_branch_outputs(dim, modalities):
    net = make(dim, modalities)
    x = torch.randn(2, modalities, *(16,) * dim)
    out = net.train()(x)
    assert out["logits"].shape == (2, 3, *(16,) * dim)
    assert len(out["branch_logits"]) == modalities
    assert [tuple(t.shape) for t in out["branch_logits"][0]] == [(2, 3, *(s,) * dim) for s in (16, 8)]
    net.eval()
    with torch.no_grad():
        assert [tuple(t.shape) for t in net(x)] == [(2, 3, *(s,) * dim) for s in (16, 8)]
        net.set_deep_supervision(False)
        assert net(x).shape == (2, 3, *(16,) * dim)


def test_cascade_channels_go_to_every_branch():
    torch.manual_seed(0)
    net = MAMLNet(architecture(dim=3), 2, 3, 3, False, {}).eval()
    x = torch.randn(1, 5, 16, 16, 16)
    with torch.no_grad():
        assert net(x).shape == (1, 3, 16, 16, 16)
        changed = x.clone()
        changed[:, 2:] = 0                     # the previous stage's one-hot channels reach the output
        assert not torch.allclose(net(x), net(changed))
    with pytest.raises(ValueError, match="2 modality channels \\+ 3 cascade channels, got 4"):
        net(x[:, :4])


@pytest.mark.parametrize("kind", ["PlainConvUNet", "ResidualEncoderUNet"])
@pytest.mark.parametrize("dim", [2, 3])
def test_split_branch_convolutions_compute_the_grouped_network(dim, kind):
    grouped = make(dim, kind=kind, branch_convolutions="grouped").train()
    split = make(dim, kind=kind, branch_convolutions="split").train()
    assert_same_function(grouped, split, torch.randn(2, 3, *(16,) * dim),
                         torch.tensor([[True, False, True], [True, True, True]]),
                         lambda out: [out["logits"], *(t for branch in out["branch_logits"] for t in branch)])
    with pytest.raises(ValueError, match="maml.branch_convolutions must be one of"):
        make(branch_convolutions="dense")


@pytest.mark.parametrize(("dim", "kind"), [(2, "Groups"), (3, "SplitInTraining")])
def test_branch_convolutions_auto_splits_3d_networks_in_training_only(dim, kind):
    net = make(dim)
    assert {type(m).__name__ for m in net.modules() if type(m).__name__.startswith(("Conv", "ConvTranspose"))
            and type(m).__name__[-1] == "3"} == {f"Conv{dim}d{kind}3", f"ConvTranspose{dim}d{kind}3"}


def test_branch_width_is_half_the_plans_but_not_below_the_minimum():
    def first_stage_channels(net):
        return next(net.encoder.parameters()).shape[0] // 3

    tiny = architecture(features=(16, 32, 64))
    assert first_stage_channels(MAMLNet(tiny, 3, 0, 3, knobs={})) == 16                  # half of 16 -> floor 16
    assert first_stage_channels(MAMLNet(tiny, 3, 0, 3, knobs={"min_branch_features": 8})) == 8
    assert first_stage_channels(MAMLNet(architecture(features=(32, 64, 128)), 3, 0, 3, knobs={})) == 16
    assert first_stage_channels(MAMLNet(architecture(features=(8, 16, 32)), 3, 0, 3, knobs={})) == 8   # plans' own
    for bad in (0, 1.5, True, "16"):
        with pytest.raises(ValueError, match="min_branch_features"):
            MAMLNet(tiny, 3, 0, 3, knobs={"min_branch_features": bad})


def test_feature_map_size_for_the_planner():
    plans = architecture(features=(32, 64, 128))
    nets = [MAMLNet(plans, m, 0, 3, knobs={}) for m in (2, 3, 4)]
    sizes = [net.compute_conv_feature_map_size((16, 16)) for net in nets]
    assert sizes[0] < sizes[1] < sizes[2]
    three = nets[1]
    branches = three.encoder.compute_conv_feature_map_size((16, 16)) + \
        three.decoder.compute_conv_feature_map_size((16, 16))
    assert sizes[1] - branches == (16 + 3 * 16 * 5 + 16 + 3) * 16 * 16   # fusion, 3 MA modules, sum, head


def test_grouped_decoder_keeps_branches_independent():
    net = make().eval()
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        skips = net.encoder(branch_inputs(x, 3, 0))
        logits, features = decode_grouped(net.decoder, skips, 3)
        changed = [s.clone() for s in skips]
        for s in changed:
            split_branches(s, 3)[:, 1] += torch.randn_like(split_branches(s, 3)[:, 1])
        logits_changed, features_changed = decode_grouped(net.decoder, changed, 3)
    assert logits[0].shape == (1, 3, 3, 16, 16)
    assert features.shape[:2] == (1, 3)
    for branch in (0, 2):   # block-diagonal: other branches do not see branch 1
        assert torch.equal(logits[0][:, branch], logits_changed[0][:, branch])
        assert torch.equal(features[:, branch], features_changed[:, branch])
    assert not torch.allclose(logits[0][:, 1], logits_changed[0][:, 1])


def test_availability_weights_renormalise():
    available = torch.tensor([[True, False, True], [False, False, True]])
    assert torch.allclose(availability_weights(available, 3, torch.zeros(1)),
                          torch.tensor([[1.5, 0.0, 1.5], [0.0, 0.0, 3.0]]))


def test_absent_modalities_do_not_change_the_fused_output():
    net = make().eval()
    net.set_deep_supervision(False)
    x = torch.randn(2, 3, 16, 16)
    available = torch.tensor([[True, False, True], [False, True, True]])
    other = x.clone()
    other[0, 1] = 5 * torch.randn(16, 16)
    other[1, 0] = 5 * torch.randn(16, 16)
    with torch.no_grad():
        assert torch.allclose(net(x, available), net(other, available), atol=1e-5)


def test_single_modality_uses_its_branch_head_when_asked():
    net = make(single_modality_head="branch").eval()
    net.set_deep_supervision(False)
    x = torch.randn(2, 3, 16, 16)
    available = torch.tensor([[False, True, False], [True, True, False]])
    with torch.no_grad():
        out = net(x, available)
        net.single_modality_head = "fused"
        fused = net(x, available)
        branch = decode_grouped(net.decoder, net.encoder(branch_inputs(x, 3, 0)), 3)[0][0][:, 1]
    assert torch.allclose(out[0], branch[0], atol=1e-6)
    assert torch.allclose(out[1], fused[1])
    with pytest.raises(ValueError, match="single_modality_head"):
        make(single_modality_head="best")


def test_fused_head_has_a_bias_only_when_asked():
    head = SegmentationHead(torch.nn.Conv2d, 2, 1, bias=False)
    head.seg_layers.weight.data = torch.tensor([1.0, 2.0]).view(1, 2, 1, 1)
    features = torch.tensor([3.0, 4.0]).view(1, 2, 1, 1)
    assert head(features).item() == 11.0                                    # 1*3 + 2*4
    biased = SegmentationHead(torch.nn.Conv2d, 2, 1, bias=True)
    biased.seg_layers.weight.data = head.seg_layers.weight.data.clone()
    biased.seg_layers.bias.data = torch.tensor([0.5])
    assert biased(features).item() == 11.5


def test_fused_head_bias_is_off_by_default_as_in_the_authors_code():
    assert "head.seg_layers.bias" not in dict(make().named_parameters())
    assert "head.seg_layers.bias" in dict(make(fused_head_bias=True).named_parameters())


@pytest.mark.parametrize("bad", [0, 1, "false", None])
def test_fused_head_bias_must_be_true_or_false(bad):
    with pytest.raises(ValueError, match="maml.fused_head_bias must be true or false"):
        make(fused_head_bias=bad)


@pytest.mark.parametrize("head_keys", ["head.seg_layers.", "head."])   # with and without the earlier head rename
def test_weights_of_a_network_with_the_bias_load_and_predict_as_before(head_keys):
    # nnU-Net's predictor builds from the model folder's plans, which do not say that a checkpoint predates the knob
    old = make(fused_head_bias=True).eval()
    old.head.seg_layers.bias.data = torch.tensor([0.5, -1.0, 2.0])
    weights = {key.replace("head.seg_layers.", head_keys): value for key, value in old.state_dict().items()}
    built_from_plans = make().eval()
    built_from_plans.load_state_dict(weights)
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(built_from_plans(x)[0], old(x)[0])
    # the next fold of the same model folder may be trained without the bias
    new = make().eval()
    built_from_plans.load_state_dict(new.state_dict())
    assert built_from_plans.head.seg_layers.bias is None


def test_resuming_a_checkpoint_written_before_fused_head_bias_builds_the_bias(preprocessed_folder, nnunet_paths):
    from test_base_trainer import make_trainer

    from nnunet_multimodal.training.checkpointing import PLUGIN_KEY, CheckpointError
    from nnunet_multimodal.training.maml import nnUNetTrainerMAML

    def trainer_with_knobs(knobs):
        plans = json.loads((preprocessed_folder / f"{TINY_PLANS}.json").read_text())
        plans["configurations"]["2d"]["multimodal"] = {"maml": knobs}
        plans["continue_training"] = False
        dataset_json = json.loads((preprocessed_folder / "dataset.json").read_text())
        return nnUNetTrainerMAML(plans, "2d", 0, dataset_json, device=torch.device("cpu"))

    writer = trainer_with_knobs({"fused_head_bias": True})
    writer.initialize()
    old = copy.deepcopy(writer.checkpoint_payload())
    del old[PLUGIN_KEY]["knobs"]["architecture"]["fused_head_bias"]     # as checkpoints before the knob record it

    resumed = make_trainer(nnUNetTrainerMAML, preprocessed_folder)    # plans without the knob
    resumed.load_checkpoint(old)
    assert torch.equal(resumed.network.head.seg_layers.bias, writer.network.head.seg_layers.bias)
    assert resumed.effective_knobs()["architecture"]["fused_head_bias"] is True
    with pytest.raises(CheckpointError, match="'fused_head_bias': True.*in the checkpoint.*'fused_head_bias': False"):
        trainer_with_knobs({"fused_head_bias": False}).load_checkpoint(old)


def test_every_parameter_in_the_graph_with_masks():
    net = make(modalities=3).train()
    out = net(torch.randn(2, 3, 16, 16), torch.tensor([[True, False, False], [False, False, True]]))
    (out["logits"].sum() + sum(sum(t.sum() for t in b) for b in out["branch_logits"])).backward()
    assert all(p.grad is not None for p in net.parameters())


def test_kl_by_hand():
    student = torch.zeros(1, 2, 1, 1)
    teacher = torch.tensor([math.log(3.0), 0.0]).view(1, 2, 1, 1)
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert prediction_kl(student, teacher).item() == pytest.approx(expected, rel=1e-5)
    assert prediction_kl(teacher, teacher).abs().max() < 1e-6
    # region datasets: independent Bernoulli per channel, p = sigmoid(log 3) = 0.75 against q = 0.5
    region = prediction_kl(torch.zeros(1, 1, 1, 1), torch.full((1, 1, 1, 1), math.log(3.0)), regions=True)
    assert region.item() == pytest.approx(expected, rel=1e-5)
    # temperature T scales logits by 1/T and the result by T^2
    assert prediction_kl(student, 2 * teacher, temperature=2.0).item() == pytest.approx(4 * expected, rel=1e-5)


def test_mutual_term_masks_and_gradients():
    fused = torch.randn(2, 3, 4, 4, requires_grad=True)
    branches = [torch.randn(2, 3, 4, 4, requires_grad=True) for _ in range(2)]
    kl = MutualLearningKL()
    kl(branches, fused).backward()
    # the fused teacher is detached
    assert fused.grad is None
    assert all(b.grad is not None for b in branches)
    only_first = torch.tensor([[True, False], [True, False]])
    per_sample = prediction_kl(branches[0], fused).flatten(1).mean(1)
    assert torch.allclose(kl(branches, fused, only_first), per_sample.mean() / 2, atol=1e-6)
    assert kl(branches, fused, valid=torch.zeros(2, 1, 4, 4)) == 0
    with pytest.raises(ValueError, match="temperature"):
        MutualLearningKL(temperature=0)


def test_branch_losses_are_summed_over_modalities_present(preprocessed_folder, nnunet_paths):
    from test_base_trainer import make_trainer

    from nnunet_multimodal.training.maml import nnUNetTrainerMAML

    trainer = make_trainer(nnUNetTrainerMAML, preprocessed_folder)
    trainer.initialize()
    torch.manual_seed(0)
    patch = trainer.configuration_manager.patch_size
    x = torch.randn(2, 3, *patch)
    available = torch.tensor([[True, True, False], [True, False, True]])
    output = trainer.network.train()(x, available)
    target = [torch.randint(0, 4, (2, 1, *level.shape[2:])).float() for level in output["branch_logits"][0]]
    expected = sum(trainer.loss([level[available[:, m]] for level in logits], [t[available[:, m]] for t in target])
                   for m, logits in enumerate(output["branch_logits"]))
    # as the authors weigh them: w0 for the fused output, then every branch's full deep-supervision weights
    assert trainer.compute_extra_losses(output, target, available)["branches"].item() == \
        pytest.approx(expected.item(), rel=1e-5)


def test_maml_through_console_scripts(workspace, phantom_dataset, trained_maml_model, tmp_path):
    checkpoint = torch.load(trained_maml_model / "checkpoint_final.pth", weights_only=False)
    logs = checkpoint["logging"]
    assert len(logs["loss_branches"]) == 2
    assert all(v > 0 for v in logs["loss_branches"])
    assert logs["weight_mutual"] == [0.0, 0.0]
    assert logs["loss_mutual"] == [0.0, 0.0]
    assert checkpoint["nnunet_multimodal"]["knobs"]["modality_dropout_p"] == 0.25
    run_tool(["nnUNetv2_predict", "-i", phantom_dataset / "imagesTs", "-o", tmp_path, "-d", DATASET_ID, "-c", "2d",
              "-f", "0", "-tr", "nnUNetTrainerMAML_2x5it_NoMirroring", "-p", TINY_PLANS, "-device", "cpu", "-npp", "1",
              "-nps", "1", "--disable_progress_bar"], workspace.env)
    assert len(list(tmp_path.glob("*.nii.gz"))) == 2


def test_modality_dropout_baseline_through_console_scripts(workspace, phantom_dataset, tmp_path):
    from helpers import train_fold0

    fold = train_fold0(workspace, phantom_dataset, "nnUNetTrainerModalityDropout_2x5it_NoMirroring")
    checkpoint = torch.load(fold / "checkpoint_final.pth", weights_only=False)
    assert checkpoint["nnunet_multimodal"]["knobs"]["modality_dropout_p"] == 0.25
    result = run_tool(["nnunet-mm", "predict", "-i", phantom_dataset / "imagesTs", "-o", tmp_path, "-d", DATASET_ID,
                       "-c", "2d", "-tr", "nnUNetTrainerModalityDropout_2x5it_NoMirroring", "-p", TINY_PLANS,
                       "--missing", "T1"], workspace.env)
    assert "not trained for missing modalities" not in result.stderr  # its checkpoint says: modality dropout
    assert len(list(tmp_path.glob("*.nii.gz"))) == 2


def test_find_best_configuration_with_plain_nnunet(workspace, trained_maml_model, trained_plain_model):
    result = run_tool(["nnUNetv2_find_best_configuration", DATASET_ID, "-c", "2d", "-tr", MAML_TRAINER, PLAIN_TRAINER,
                       "-p", TINY_PLANS, "-f", "0", "-np", "1"], workspace.env)
    info = json.loads((trained_maml_model.parents[1] / "inference_information.json").read_text())
    candidates = list(info["all_results"])  # model and ensemble identifiers -> cross-validation Dice
    assert any(c.startswith(MAML_TRAINER) for c in candidates)
    assert any(c.startswith("ensemble") and MAML_TRAINER in c and PLAIN_TRAINER in c for c in candidates)
    assert "nnUNetv2_predict" in result.stdout
