import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet

from nnunet_multimodal.training.modality_dropout import sample_availability, zero_unavailable


def test_never_drops_every_modality():
    generator = torch.Generator().manual_seed(0)
    available = sample_availability(5000, 3, 0.9, generator)
    assert available.any(dim=1).all()


def test_drop_rate_matches_probability_when_rarely_all_dropped():
    generator = torch.Generator().manual_seed(1)
    available = sample_availability(20000, 4, 0.25, generator)
    assert (~available).float().mean().item() == pytest.approx(0.25, abs=0.02)


def test_zero_probability_keeps_everything():
    assert sample_availability(16, 3, 0.0).all()


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_invalid_probability(p):
    with pytest.raises(ValueError):
        sample_availability(2, 3, p)


def test_zero_unavailable_leaves_cascade_channels():
    data = torch.ones(2, 5, 4, 4)  # 3 modalities + 2 one-hot channels of a previous stage
    available = torch.tensor([[True, False, True], [False, True, True]])
    out = zero_unavailable(data, available)
    assert out[0, 1].abs().sum() == 0
    assert out[1, 0].abs().sum() == 0
    assert torch.equal(out[0, [0, 2, 3, 4]], data[0, [0, 2, 3, 4]])
    assert torch.equal(out[1, 1:], data[1, 1:])


def test_every_parameter_in_graph_under_dropout():
    """DDP without find_unused_parameters needs a gradient for every parameter, whatever was dropped."""
    torch.manual_seed(0)
    net = PlainConvUNet(3, 3, (8, 16, 32), torch.nn.Conv2d, 3, (1, 2, 2), 2, 2, (2, 2), conv_bias=True,
                        norm_op=torch.nn.InstanceNorm2d, norm_op_kwargs={"affine": True},
                        nonlin=torch.nn.LeakyReLU, deep_supervision=True)
    data = torch.randn(4, 3, 32, 32)
    available = torch.tensor([[True, False, False], [False, True, False], [False, False, True], [True, True, False]])
    outputs = net(zero_unavailable(data, available))
    sum(o.sum() for o in outputs).backward()
    assert all(p.grad is not None for p in net.parameters())
