"""MKD's second training loader: nnU-Net's own loader and augmentation, over the assistant dataset."""

from __future__ import annotations

from pathlib import Path

from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA


def assistant_training_loader(trainer, folder: Path, batch_size: int):
    """``trainer``'s training augmentation, patch size and foreground oversampling over every case of the
    preprocessed dataset in ``folder``, ``batch_size`` samples a batch, in nnU-Net's augmenter processes."""
    rotation, dummy_2d, initial_patch_size, mirror_axes = \
        trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    transforms = trainer.get_training_transforms(
        trainer.configuration_manager.patch_size, rotation, trainer._get_deep_supervision_scales(), mirror_axes,
        dummy_2d, use_mask_for_norm=trainer.configuration_manager.use_mask_for_norm, is_cascaded=False,
        foreground_labels=trainer.label_manager.foreground_labels,
        regions=trainer.label_manager.foreground_regions if trainer.label_manager.has_regions else None,
        ignore_label=trainer.label_manager.ignore_label)
    dataset_class = infer_dataset_class(str(folder))
    if trainer.local_rank == 0:
        dataset_class.unpack_dataset(str(folder), overwrite_existing=False,
                                     num_processes=max(1, round(get_allowed_n_proc_DA() // 2)), verify=True)
    loader = nnUNetDataLoader(dataset_class(str(folder)), batch_size,
                              initial_patch_size, trainer.configuration_manager.patch_size, trainer.label_manager,
                              oversample_foreground_percent=trainer.oversample_foreground_percent,
                              sampling_probabilities=None, pad_sides=None, transforms=transforms,
                              probabilistic_oversampling=trainer.probabilistic_oversampling)
    processes = get_allowed_n_proc_DA()
    if processes == 0:
        return SingleThreadedAugmenter(loader, None)
    return NonDetMultiThreadedAugmenter(loader, None, processes, max(6, processes // 2), None,
                                        pin_memory=trainer.device.type == "cuda", wait_time=0.002)
