"""Small plans-like architectures for network unit tests."""

from types import SimpleNamespace

import torch

from nnunet_multimodal.networks.plans_architecture import PlansArchitecture


def configuration(dim: int = 2, kind: str = "PlainConvUNet", n_stages: int = 3, features=(8, 16, 32)):
    conv = f"torch.nn.modules.conv.Conv{dim}d"
    norm = f"torch.nn.modules.instancenorm.InstanceNorm{dim}d"
    blocks_key = "n_conv_per_stage" if kind == "PlainConvUNet" else "n_blocks_per_stage"
    module = "unet"
    kwargs = {"n_stages": n_stages, "features_per_stage": list(features[:n_stages]), "conv_op": conv,
              "kernel_sizes": [[3] * dim] * n_stages, "strides": [[1] * dim] + [[2] * dim] * (n_stages - 1),
              blocks_key: [2] * n_stages if kind == "PlainConvUNet" else [1] * n_stages,
              "n_conv_per_stage_decoder": [1] * (n_stages - 1), "conv_bias": True, "norm_op": norm,
              "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
              "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}}
    return SimpleNamespace(
        network_arch_class_name=f"dynamic_network_architectures.architectures.{module}.{kind}",
        network_arch_init_kwargs=kwargs,
        network_arch_init_kwargs_req_import=["conv_op", "norm_op", "dropout_op", "nonlin"],
        patch_size=[16] * dim, configuration={}, normalization_schemes=None)


def architecture(**kwargs) -> PlansArchitecture:
    return PlansArchitecture.from_configuration(configuration(**kwargs))


def assert_same_function(reference: torch.nn.Module, other: torch.nn.Module, x: torch.Tensor, available, outputs):
    """``other``, loaded with ``reference``'s state dict (strict: the same parameters under the same names), gives
    the same tensors (``outputs`` picks them from a forward result) and the same parameter gradients."""
    other.load_state_dict(reference.state_dict())
    results = [outputs(net(x, available=available)) for net in (reference, other)]
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    for tensors in results:
        sum(t.square().sum() for t in tensors).backward()
    # against the largest gradient: those of biases followed by instance norm are zero up to rounding
    gradients = [torch.cat([p.grad.flatten() for p in net.parameters()]) for net in (reference, other)]
    torch.testing.assert_close(gradients[0], gradients[1], rtol=0, atol=1e-5 * gradients[0].abs().max().item())
