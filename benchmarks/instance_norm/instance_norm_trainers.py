"""Trainers for measuring what running instance norm through the group-norm kernel does to the CPU speed ratios
(docs/benchmarks.md, "Speed: instance norm through the group-norm kernel"). Put this folder on nnUNet_extTrainer
in front of the plugin's trainers, e.g.

    nnUNet_extTrainer=$PWD/benchmarks/instance_norm nnunet-mm benchmark speed ... \
        -tr nnUNetTrainerCMSAD nnUNetTrainerCMSAD_stockInstanceNorm nnUNetTrainer_groupNormKernel

- ``*_stockInstanceNorm``: a method trainer with PyTorch's own ``nn.InstanceNorm*d`` (as before 2026-12-01);
- ``nnUNetTrainer_groupNormKernel``: plain nnU-Net with the kernel our networks use: the like-for-like baseline.
"""
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from torch import nn

from nnunet_multimodal.networks.instance_norm import group_norm_kernel
from nnunet_multimodal.training.cmsad import nnUNetTrainerCMSAD
from nnunet_multimodal.training.maml import nnUNetTrainerMAML

STOCK = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)


def with_norm_classes(network: nn.Module, replace) -> nn.Module:
    for module in network.modules():
        module.__class__ = replace(type(module))
    return network


def stock_instance_norm(cls: type) -> type:
    return next((base for base in STOCK if issubclass(cls, base)), cls)


class nnUNetTrainerCMSAD_stockInstanceNorm(nnUNetTrainerCMSAD):
    @classmethod
    def build_multimodal_network(cls, *args):
        return with_norm_classes(super().build_multimodal_network(*args), stock_instance_norm)


class nnUNetTrainerMAML_stockInstanceNorm(nnUNetTrainerMAML):
    @classmethod
    def build_multimodal_network(cls, *args):
        return with_norm_classes(super().build_multimodal_network(*args), stock_instance_norm)


class nnUNetTrainer_groupNormKernel(nnUNetTrainer):
    @staticmethod
    def build_network_architecture(plans_manager, configuration_manager, num_input_channels, num_output_channels,
                                   enable_deep_supervision=True):
        network = nnUNetTrainer.build_network_architecture(plans_manager, configuration_manager, num_input_channels,
                                                           num_output_channels, enable_deep_supervision)
        return with_norm_classes(network, group_norm_kernel)
