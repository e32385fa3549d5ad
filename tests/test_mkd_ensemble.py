"""MKD's inference ensemble: the mean of the segmentors' logits, or of their probabilities (the paper's), given
to nnU-Net's predictor as logits whose softmax or sigmoid is that mean."""

import pytest
import torch

from nnunet_multimodal.networks.mkd import ensemble_logits

T = torch.tensor([[[2.0], [0.0], [-1.0]]])       # one voxel, three classes
A = torch.tensor([[[-3.0], [1.0], [30.0]]])      # a confident assistant


def test_logits_ensemble_is_the_mean_of_the_logits():
    torch.testing.assert_close(ensemble_logits(T, A), torch.tensor([[[-0.5], [0.5], [14.5]]]))


def test_softmax_ensemble_is_the_mean_of_the_probabilities():
    expected = (torch.softmax(T, 1) + torch.softmax(A, 1)) / 2
    torch.testing.assert_close(torch.softmax(ensemble_logits(T, A, "softmax_probabilities"), 1), expected)


def test_sigmoid_ensemble_is_the_mean_of_the_probabilities():
    expected = (torch.sigmoid(T) + torch.sigmoid(A)) / 2
    torch.testing.assert_close(torch.sigmoid(ensemble_logits(T, A, "sigmoid_probabilities")), expected)


def test_probability_ensembles_stay_finite_for_confident_logits():
    confident = torch.tensor([[[200.0], [-200.0]]])
    assert torch.isfinite(ensemble_logits(confident, -confident, "sigmoid_probabilities")).all()


def test_the_two_ensembles_can_disagree():
    """One segmentor's very negative logit vetoes a class in the mean of logits; in the mean of probabilities it
    only withholds its own vote."""
    t, a = torch.tensor([[[0.0], [3.0], [0.0]]]), torch.tensor([[[0.0], [-30.0], [0.5]]])
    winners = (ensemble_logits(t, a).argmax(1).item(), ensemble_logits(t, a, "softmax_probabilities").argmax(1).item())
    assert winners == (2, 1)


def test_deep_supervision_levels_are_ensembled_one_by_one():
    levels = ensemble_logits([T, T[..., :1]], [A, A[..., :1]], "softmax_probabilities")
    assert [level.shape for level in levels] == [T.shape, T[..., :1].shape]


def test_an_unknown_ensemble_is_refused():
    from nnunet_multimodal.networks.mkd import MKDNet

    with pytest.raises(ValueError, match="ensemble must be one of"):
        MKDNet(torch.nn.Identity(), torch.nn.Identity(), "median")


def test_the_ensemble_knob_is_checked():
    from nnunet_multimodal.networks.mkd import check_knobs

    with pytest.raises(ValueError, match="mkd.ensemble must be one of"):
        check_knobs({"ensemble": "probabilities"})


class _Constant(torch.nn.Module):
    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return self.logits


class _Refusing(torch.nn.Module):
    def forward(self, x):
        raise AssertionError("this segmentor must not run")


def test_target_segmentor_inference_returns_the_target_segmentors_logits():
    from nnunet_multimodal.networks.mkd import MKDNet

    net = MKDNet(_Constant(T), _Refusing(), "target_segmentor").eval()
    torch.testing.assert_close(net(torch.zeros(1)), T)


def test_assistant_segmentor_inference_returns_the_assistant_segmentors_logits():
    from nnunet_multimodal.networks.mkd import MKDNet

    net = MKDNet(_Refusing(), _Constant(A), "assistant_segmentor").eval()
    torch.testing.assert_close(net(torch.zeros(1)), A)


def test_single_segmentor_inference_still_trains_both_segmentors():
    from nnunet_multimodal.networks.mkd import MKDNet

    output = MKDNet(_Constant(T), _Constant(A), "target_segmentor").train()(torch.zeros(1))
    assert set(output) == {"logits", "assistant_logits"}
