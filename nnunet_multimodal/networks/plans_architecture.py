"""The plans' standard architecture (PlainConvUNet / ResidualEncoderUNet kwargs) as typed pieces that
method networks rebuild with other widths and input channels."""

from __future__ import annotations

import pydoc
from dataclasses import dataclass

from dynamic_network_architectures.building_blocks.plain_conv_encoder import PlainConvEncoder
from dynamic_network_architectures.building_blocks.residual import BasicBlockD, BottleneckD
from dynamic_network_architectures.building_blocks.residual_encoders import ResidualEncoder
from dynamic_network_architectures.building_blocks.unet_decoder import UNetDecoder
from dynamic_network_architectures.building_blocks.unet_residual_decoder import UNetResDecoder
from dynamic_network_architectures.initialization.weight_init import InitWeights_He, init_last_bn_before_add_to_0
from torch import nn

from nnunet_multimodal.networks.instance_norm import group_norm_kernel

PLAIN = "PlainConvUNet"
RESIDUAL = "ResidualEncoderUNet"


@dataclass(frozen=True)
class PlansArchitecture:
    kind: str
    conv_op: type
    features_per_stage: tuple[int, ...]
    kernel_sizes: tuple
    strides: tuple
    blocks_per_stage: tuple[int, ...]
    n_conv_per_stage_decoder: tuple[int, ...]
    conv_bias: bool
    norm_op: type | None
    norm_op_kwargs: dict | None
    dropout_op: type | None
    dropout_op_kwargs: dict | None
    nonlin: type | None
    nonlin_kwargs: dict | None
    nonlin_first: bool = False
    block: type = BasicBlockD

    @property
    def n_stages(self) -> int:
        return len(self.features_per_stage)

    @property
    def dim(self) -> int:
        return len(self.strides[0])

    @classmethod
    def from_configuration(cls, configuration_manager, instance_norm: str = "auto") -> PlansArchitecture:
        """The configuration's architecture; ``instance_norm``: where its instance norms run through the group-norm
        kernel (``instance_norm.py``)."""
        class_name = configuration_manager.network_arch_class_name.split(".")[-1]
        kwargs = dict(configuration_manager.network_arch_init_kwargs)
        for key in configuration_manager.network_arch_init_kwargs_req_import:
            if kwargs.get(key) is not None:
                kwargs[key] = pydoc.locate(kwargs[key])
        if class_name == PLAIN:
            blocks = kwargs["n_conv_per_stage"]
        elif class_name == RESIDUAL:
            blocks = kwargs["n_blocks_per_stage"]
        else:
            raise ValueError(f"multi-branch networks build on PlainConvUNet or ResidualEncoderUNet plans; this "
                             f"configuration uses {configuration_manager.network_arch_class_name}. Plan with "
                             f"nnU-Net's default or ResEnc planners.")
        n = kwargs["n_stages"]

        def per_stage(value):
            return tuple(value) if isinstance(value, (list, tuple)) else (value,) * n

        # the same normalisation, faster on the CPU (instance_norm.py)
        norm_op = group_norm_kernel(kwargs.get("norm_op"), instance_norm)
        block = kwargs.get("block", BasicBlockD)
        if isinstance(block, str):
            block = pydoc.locate(block)
        return cls(kind=class_name, conv_op=kwargs["conv_op"],
                   features_per_stage=per_stage(kwargs["features_per_stage"]),
                   kernel_sizes=tuple(tuple(k) for k in kwargs["kernel_sizes"]),
                   strides=tuple(tuple(s) for s in kwargs["strides"]), blocks_per_stage=per_stage(blocks),
                   n_conv_per_stage_decoder=tuple(kwargs["n_conv_per_stage_decoder"]) if isinstance(
                       kwargs["n_conv_per_stage_decoder"], (list, tuple)) else (kwargs["n_conv_per_stage_decoder"],)
                   * (n - 1), conv_bias=kwargs.get("conv_bias", False), norm_op=norm_op,
                   norm_op_kwargs=kwargs.get("norm_op_kwargs"), dropout_op=kwargs.get("dropout_op"),
                   dropout_op_kwargs=kwargs.get("dropout_op_kwargs"), nonlin=kwargs.get("nonlin"),
                   nonlin_kwargs=kwargs.get("nonlin_kwargs"), nonlin_first=kwargs.get("nonlin_first", False),
                   block=block)

    def build_encoder(self, input_channels: int, features: tuple[int, ...], conv_op: type | None = None) -> nn.Module:
        """An encoder of this architecture with other widths (and, e.g., a grouped conv op)."""
        conv_op = conv_op or self.conv_op
        common = dict(conv_bias=self.conv_bias, norm_op=self.norm_op, norm_op_kwargs=self.norm_op_kwargs,
                      dropout_op=self.dropout_op, dropout_op_kwargs=self.dropout_op_kwargs, nonlin=self.nonlin,
                      nonlin_kwargs=self.nonlin_kwargs, return_skips=True)
        if self.kind == PLAIN:
            return PlainConvEncoder(input_channels, self.n_stages, list(features), conv_op, list(self.kernel_sizes),
                                    list(self.strides), list(self.blocks_per_stage), nonlin_first=self.nonlin_first,
                                    **common)
        if self.block is BottleneckD:
            raise ValueError("ResidualEncoderUNet plans with BottleneckD blocks are not supported by multi-branch "
                             "networks; use BasicBlockD plans (nnU-Net's ResEnc presets do)")
        return ResidualEncoder(input_channels, self.n_stages, list(features), conv_op, list(self.kernel_sizes),
                               list(self.strides), list(self.blocks_per_stage), block=self.block,
                               stem_channels=features[0], **common)

    @property
    def output_channels(self) -> tuple[int, ...]:
        return self.features_per_stage

    def build_decoder(self, num_classes: int, deep_supervision: bool) -> nn.Module:
        """nnU-Net's decoder for this architecture over skips with the plans' own widths. The decoder reads
        what it needs from this plain object (``output_channels``, ``strides``, ``conv_op``, ...) instead of an
        encoder module, so it does not hold a second copy of an encoder in the state dict."""
        if self.kind == PLAIN:
            return UNetDecoder(self, num_classes, list(self.n_conv_per_stage_decoder), deep_supervision,
                               nonlin_first=self.nonlin_first)
        return UNetResDecoder(self, num_classes, list(self.n_conv_per_stage_decoder), deep_supervision)

    def initializer(self):
        """The weight initialisation nnU-Net applies to the network class of these plans."""
        he = InitWeights_He(1e-2)
        if self.kind == PLAIN:
            return he

        def residual_init(module):
            he(module)
            init_last_bn_before_add_to_0(module)

        return residual_init
