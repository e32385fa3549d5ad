import math

import pytest
import torch

from nnunet_multimodal.losses.attention_distillation import CrossModalAttentionDistillation, attention_map


def test_attention_map_by_hand():
    # one sample, one modality, 2 channels at 2 positions: mean of squares = [1, 2]
    features = torch.tensor([[1.0, 0.0], [1.0, 2.0]]).view(1, 1, 2, 2, 1)
    soft = attention_map(features)
    expected = torch.tensor([math.e, math.e ** 2]) / (math.e + math.e ** 2)
    assert torch.allclose(soft.view(2), expected, atol=1e-6)
    l2 = attention_map(features, normalization="l2")
    assert torch.allclose(l2.view(2), torch.tensor([1.0, 2.0]) / math.sqrt(5), atol=1e-6)
    p1 = attention_map(-features, p=1, normalization="l2")  # |F|: sign does not matter
    assert torch.allclose(p1.view(2), torch.tensor([1.0, 1.0]) / math.sqrt(2), atol=1e-6)


def test_attention_map_resized_to_a_common_grid():
    features = torch.rand(2, 3, 4, 4, 4)
    assert attention_map(features, size=(8, 8)).shape == (2, 3, 64)
    assert torch.allclose(attention_map(features, size=(8, 8)).sum(-1), torch.ones(2, 3))


def two_modality_stage(a, b):
    """Branch-major features (1, 2*C, 2, 1) from per-modality (C, 2) lists."""
    return torch.tensor([a, b], dtype=torch.float32).view(1, -1, 2, 1)


def test_cross_term_by_hand():
    stage = two_modality_stage([[1.0, 0.0]], [[0.0, 1.0]])   # maps softmax([1,0]) and softmax([0,1])
    loss = CrossModalAttentionDistillation(stages=(0,), self_distillation=False)
    s = torch.softmax(torch.tensor([1.0, 0.0]), 0)
    t = torch.softmax(torch.tensor([0.0, 1.0]), 0)
    expected = ((s - t) ** 2).sum()  # both directions give the same distance; mean over the 2 pairs
    assert torch.allclose(loss([stage], 2), expected, atol=1e-6)


def test_self_term_by_hand():
    shallow = torch.tensor([[[1.0, 0.0, 0.0, 1.0]], [[0.0, 0.0, 0.0, 0.0]]]).view(1, 2, 4, 1)
    deep = torch.tensor([[[2.0, 0.0]], [[0.0, 0.0]]]).view(1, 2, 2, 1)
    loss = CrossModalAttentionDistillation(stages=(0, 1), cross_pairs="none", self_distillation=True)
    maps = attention_map(shallow.view(1, 2, 1, 4, 1)).view(2, 4)
    upsampled = torch.nn.functional.interpolate(torch.tensor([4.0, 0.0]).view(1, 1, 2, 1), size=(4, 1),
                                                mode="bilinear", align_corners=False).view(4)
    target = torch.stack([torch.softmax(upsampled, 0), torch.softmax(torch.zeros(4), 0)])
    expected = ((maps - target) ** 2).sum(-1).mean()
    assert torch.allclose(loss([shallow, deep], 2), expected, atol=1e-6)


def test_no_gradient_into_the_target_side():
    stage = torch.randn(2, 3 * 4, 4, 4, requires_grad=True)
    loss = CrossModalAttentionDistillation(stages=(0,), cross_pairs="to_first", self_distillation=False)
    loss([stage], 3).backward()
    grad = stage.grad.view(2, 3, 4, 4, 4)
    assert grad[:, 0].abs().sum() == 0             # modality 0 only teaches
    assert grad[:, 1].abs().sum() > 0
    assert grad[:, 2].abs().sum() > 0


def test_absent_modalities_excluded():
    stage = torch.randn(2, 2 * 4, 4, 4)
    loss = CrossModalAttentionDistillation(stages=(0,), self_distillation=False)
    only_one = torch.tensor([[True, False], [True, False]])
    assert loss([stage], 2, available=only_one) == 0
    one_sample_complete = torch.tensor([[True, True], [True, False]])
    first = loss([stage[:1]], 2)
    assert torch.allclose(loss([stage], 2, available=one_sample_complete), first)


def test_ignored_voxels_do_not_contribute():
    stage = torch.randn(1, 2 * 4, 4, 4)
    loss = CrossModalAttentionDistillation(stages=(0,), self_distillation=False)
    assert loss([stage], 2, valid=torch.zeros(1, 1, 8, 8)) == 0
    half = torch.zeros(1, 1, 8, 8)
    half[..., :4] = 1                               # the left half of the full-resolution grid counts
    maps = attention_map(stage.view(1, 2, 4, 4, 4)).view(2, 4, 4)
    expected = ((maps[0] - maps[1]) ** 2)[:, :2].sum()
    assert torch.allclose(loss([stage], 2, valid=half), expected, atol=1e-6)


@pytest.mark.parametrize("kwargs", [{"cross_pairs": "all"}, {"normalization": "max"}, {"p": 0}, {"stages": ()},
                                    {"cross_pairs": "none", "self_distillation": False}])
def test_invalid_options(kwargs):
    with pytest.raises(ValueError):
        CrossModalAttentionDistillation(**kwargs)


def test_stage_out_of_range():
    with pytest.raises(ValueError, match="out of range"):
        CrossModalAttentionDistillation(stages=(5,))([torch.randn(1, 4, 2, 2)], 2)
