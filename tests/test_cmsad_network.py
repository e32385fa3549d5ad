import pytest
import torch
from arch_helpers import architecture, assert_same_function

from nnunet_multimodal.networks.branch_convolutions import grouped_conv, grouped_transposed_conv
from nnunet_multimodal.networks.branches import branch_features_per_stage
from nnunet_multimodal.networks.cmsad import CMSADNet
from nnunet_multimodal.networks.scff import SpatialCorrelatedFeatureFusion


def make(dim=2, modalities=3, extra=0, classes=3, kind="PlainConvUNet", ds=True, **knobs):
    torch.manual_seed(0)
    return CMSADNet(architecture(dim=dim, kind=kind), modalities, extra, classes, (16,) * dim, ds, knobs)


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("modalities", [2, 3, 4])
def test_shapes_training_and_inference(dim, modalities):
    net = make(dim, modalities)
    x = torch.randn(2, modalities, *(16,) * dim)
    out = net.train()(x)
    assert [tuple(o.shape) for o in out["logits"]] == [(2, 3, *(s,) * dim) for s in (16, 8)]
    assert [f.shape[1] for f in out["branch_features"]] == [modalities * c for c in net.branch_channels]
    net.eval()
    net.set_deep_supervision(False)
    with torch.no_grad():
        logits = net(x)
    assert isinstance(logits, torch.Tensor)
    assert logits.shape == (2, 3, *(16,) * dim)


def test_residual_encoder_plans():
    net = make(kind="ResidualEncoderUNet")
    out = net.train()(torch.randn(2, 3, 16, 16))
    assert out["logits"][0].shape == (2, 3, 16, 16)


def test_deep_supervision_toggle():
    net = make().eval()
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert isinstance(net(x), list)
        net.set_deep_supervision(False)
        assert isinstance(net(x), torch.Tensor)


def test_gradients_reach_every_branch_and_every_parameter():
    net = make(modalities=3).train()
    out = net(torch.randn(2, 3, 16, 16), available=torch.tensor([[True, False, True], [False, True, False]]))
    sum(o.sum() for o in out["logits"]).backward()
    assert all(p.grad is not None for p in net.parameters())
    first = next(m for m in net.encoder.modules() if isinstance(m, torch.nn.Conv2d))
    per_branch = first.weight.grad.view(3, -1).abs().sum(dim=1)
    assert (per_branch > 0).all()


def test_absent_modality_does_not_change_the_output():
    net = make(modalities=3).eval()
    x = torch.randn(2, 3, 16, 16)
    available = torch.tensor([[True, False, True], [True, True, False]])
    other = x.clone()
    other[0, 1] = torch.randn(16, 16) * 5
    other[1, 2] = torch.randn(16, 16) * 5
    with torch.no_grad():
        assert torch.allclose(net(x, available)[0], net(other, available)[0], atol=1e-5)
        assert not torch.allclose(net(x)[0], net(other)[0], atol=1e-3)


def test_cascade_channels_go_to_every_branch():
    net = make(modalities=2, extra=2).train()
    out = net(torch.randn(1, 4, 16, 16))
    assert out["logits"][0].shape == (1, 3, 16, 16)
    with pytest.raises(ValueError, match="2 modality channels \\+ 2 cascade channels, got 3"):
        net(torch.randn(1, 3, 16, 16))


def test_level_modes_follow_knobs():
    assert make(attention_max_tokens=32).level_modes == ["none", "gating", "attention"]  # 256, 64, 16 positions
    assert make(scff_levels=[0, 2], attention_max_tokens=0).level_modes == ["gating", "none", "gating"]
    with pytest.raises(ValueError, match="out of range"):
        make(scff_levels=[5])


def test_branch_width_rule():
    assert branch_features_per_stage((32, 64, 128, 256), 4, "auto") == (16, 32, 64, 128)  # 1/sqrt(4)
    assert branch_features_per_stage((16, 32, 64, 128), 3, "auto") == (8, 16, 40, 72)     # multiples of 8
    assert branch_features_per_stage((16, 32), 2, 0.25) == (8, 8)
    for bad in (0, 1.5, "half"):
        with pytest.raises(ValueError, match="branch_width"):
            branch_features_per_stage((16,), 2, bad)


def test_feature_map_size_for_the_planner():
    net = make()
    assert net.compute_conv_feature_map_size((16, 16)) > 0


@pytest.mark.parametrize("mode", ["attention", "gating", "none"])
def test_scff_ignores_absent_modalities(mode):
    torch.manual_seed(0)
    fusion = SpatialCorrelatedFeatureFusion(torch.nn.Conv2d, torch.nn.InstanceNorm2d, {"affine": True},
                                            torch.nn.LeakyReLU, None, 3, 8, 16, mode).eval()
    if mode == "attention":
        torch.nn.init.constant_(fusion.residual_scale, 0.5)
    features = torch.randn(2, 24, 4, 4)
    changed = features.clone()
    changed[:, 8:16] = torch.randn(2, 8, 4, 4)
    available = torch.tensor([[True, False, True], [True, False, False]])
    with torch.no_grad():
        assert torch.allclose(fusion(features, available), fusion(changed, available), atol=1e-5)
        assert torch.isfinite(fusion(features, available)).all()


def test_scff_gating_scales_each_modality_by_its_pairwise_cosine_correlation():
    fusion = SpatialCorrelatedFeatureFusion(torch.nn.Conv2d, None, None, None, None, 3, 2, 4, "gating")
    with torch.no_grad():  # gate of modality m = 2 sigmoid(sum of the pair correlations), pairs (0,1), (0,2), (1,2)
        fusion.gate.weight.copy_(torch.tensor([[1.0, 1, 0], [1, 0, 1], [0, 1, 1]]).view(3, 3, 1, 1))
        fusion.gate.bias.zero_()
    features = torch.tensor([[3.0, 0], [1, 1], [1, -2]]).view(1, 6, 1, 1)  # one position, 2 channels each
    cosine = {(0, 1): 2 ** -0.5, (0, 2): 5 ** -0.5, (1, 2): -(10 ** -0.5)}
    gates = 2 * torch.sigmoid(torch.tensor([cosine[0, 1] + cosine[0, 2], cosine[0, 1] + cosine[1, 2],
                                            cosine[0, 2] + cosine[1, 2]]))
    expected = (features.view(3, 2) * gates[:, None]).view(1, 6, 1, 1)
    torch.testing.assert_close(fusion.correlate_gating(features, None), expected)
    absent_second = torch.tensor([[True, False, True]])  # pairs with an absent modality correlate 0
    gates = 2 * torch.sigmoid(torch.tensor([cosine[0, 2], 0.0, cosine[0, 2]]))
    torch.testing.assert_close(fusion.correlate_gating(features, absent_second),
                               (features.view(3, 2) * gates[:, None]).view(1, 6, 1, 1))


def test_scff_invalid_options():
    with pytest.raises(ValueError, match="mode"):
        SpatialCorrelatedFeatureFusion(torch.nn.Conv2d, None, None, None, None, 3, 8, 8, "bogus")
    with pytest.raises(ValueError, match="two modalities"):
        SpatialCorrelatedFeatureFusion(torch.nn.Conv2d, None, None, None, None, 1, 8, 8, "none")


@pytest.mark.parametrize("kind", ["PlainConvUNet", "ResidualEncoderUNet"])
@pytest.mark.parametrize("dim", [2, 3])
def test_split_branch_convolutions_compute_the_grouped_network(dim, kind):
    knobs = {"attention_max_tokens": 4 ** dim}  # attention at the lowest level, gating above
    grouped = make(dim, kind=kind, branch_convolutions="grouped", **knobs).train()
    split = make(dim, kind=kind, branch_convolutions="split", **knobs).train()
    assert "attention" in grouped.level_modes
    assert "gating" in grouped.level_modes
    assert_same_function(grouped, split, torch.randn(2, 3, *(16,) * dim),
                         torch.tensor([[True, False, True], [True, True, True]]), lambda out: out["logits"])
    with pytest.raises(ValueError, match="cmsad.branch_convolutions must be one of"):
        make(branch_convolutions="dense")


@pytest.mark.parametrize(("dim", "kind"), [(2, "Groups"), (3, "SplitInTraining")])
def test_branch_convolutions_auto_splits_3d_networks_in_training_only(dim, kind):
    first = next(m for m in make(dim).encoder.modules() if isinstance(m, torch.nn.modules.conv._ConvNd))
    assert type(first).__name__ == f"Conv{dim}d{kind}3"


@pytest.mark.parametrize("transposed", [False, True])
def test_split_in_training_runs_split_only_in_training_mode(transposed):
    factory = grouped_transposed_conv if transposed else grouped_conv
    conv = factory(torch.nn.Conv3d, 2, "split_in_training")(4, 4, 2, 2)
    x = torch.randn(1, 4, 4, 4, 4)
    assert type(conv.train()(x).grad_fn).__name__ == "CatBackward0"  # one convolution per branch, concatenated
    assert type(conv.eval()(x).grad_fn).__name__ == "ConvolutionBackward0"
    with pytest.raises(ValueError, match="execution must be one of"):
        factory(torch.nn.Conv3d, 2, "sometimes")


@pytest.mark.parametrize("knob, value, message", [
    ("attention_dim", 0, "cmsad.attention_dim must be a positive integer"),
    ("attention_dim", 8.5, "cmsad.attention_dim must be a positive integer"),
    ("attention_max_tokens", -1, "cmsad.attention_max_tokens must be a non-negative integer")])
def test_attention_knobs_out_of_range_name_the_knob(knob, value, message):
    with pytest.raises(ValueError, match=message):
        make(**{knob: value})


def test_the_network_learns_a_structure_seen_in_one_modality():
    """In seconds what the slow demo-budget test (test_cmsad_trainer.py) shows through nnU-Net: a square visible
    in the second modality only is learnt from one batch."""
    net = make(modalities=2, classes=2).train()
    generator = torch.Generator().manual_seed(0)
    x = 0.1 * torch.randn(2, 2, 16, 16, generator=generator)
    target = torch.zeros(2, 16, 16, dtype=torch.long)
    target[:, 4:11, 5:12] = 1
    x[:, 1] += target
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(30):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x)["logits"][0], target).backward()
        optimizer.step()
    predicted = net(x)["logits"][0].argmax(1).bool()
    dice = 2 * (predicted & target.bool()).sum() / (predicted.sum() + target.sum())
    assert dice > 0.9
