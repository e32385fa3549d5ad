"""``nnunet-mm attention-maps``: each modality branch's attention maps per encoder stage, over the image, for
one case and a trained CMSAD model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nnunet_multimodal.data.verify import read_image
from nnunet_multimodal.losses.attention_distillation import attention_map
from nnunet_multimodal.networks.cmsad import CMSADNet


def load_model(model_folder: str | Path, fold: str, checkpoint: str, device: torch.device):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(device=device, perform_everything_on_device=False, verbose=False,
                                allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model_folder), (int(fold) if fold != "all" else fold,),
                                                   checkpoint)
    network = predictor.network
    if not isinstance(network, CMSADNet):
        raise ValueError(f"{model_folder} holds a {type(network).__name__} model; attention maps need a model "
                         f"trained with nnUNetTrainerCMSAD (or one of its variants)")
    network.load_state_dict(predictor.list_of_parameters[0])
    return predictor, network.to(device).eval()


def branch_attention_maps(network: CMSADNet, data: torch.Tensor) -> list[np.ndarray]:
    """data (M+E, *sp), sp divisible by the network's total stride -> per stage an array (M, *sp) of maps
    resized to the input grid, each scaled to [0, 1] for display."""
    with torch.no_grad():
        skips = network.branch_skips(data[None])
    maps = []
    for features in skips:
        per_modality = network.per_modality(features)
        stage_maps = attention_map(per_modality, size=data.shape[1:]).view(network.num_modalities, *data.shape[1:])
        lo = stage_maps.flatten(1).min(1).values.view(-1, *([1] * (data.ndim - 1)))
        hi = stage_maps.flatten(1).max(1).values.view(-1, *([1] * (data.ndim - 1)))
        maps.append(((stage_maps - lo) / (hi - lo).clamp_min(1e-12)).cpu().numpy())
    return maps


def pad_to_multiple(data: torch.Tensor, multiple: np.ndarray) -> torch.Tensor:
    pads = []
    for size, m in zip(reversed(data.shape[1:]), reversed(multiple)):
        pads += [0, int(-size % m)]
    return F.pad(data, pads)


def export_attention_maps(model_folder: str | Path, fold: str, checkpoint: str, image_files: list[str],
                          output: str | Path, device: str = "cpu") -> Path:
    from nnunet_multimodal.figures import new_figure, refuse_foreign_figure, save_figure

    refuse_foreign_figure(output)
    missing = [f for f in image_files if not Path(f).is_file()]
    if missing:
        raise FileNotFoundError(f"image file(s) {missing} do not exist; pass one file per modality, in the "
                                f"order of dataset.json channel_names")
    for path in image_files:  # nnU-Net's preprocessor would read a file cut short without an error
        read_image(Path(path))
    predictor, network = load_model(model_folder, fold, checkpoint, torch.device(device))
    names = [predictor.dataset_json["channel_names"][k] for k in sorted(predictor.dataset_json["channel_names"],
                                                                         key=int)]
    if len(image_files) != len(names):
        raise ValueError(f"the model was trained on {len(names)} modalities ({', '.join(names)}); got "
                         f"{len(image_files)} image files")
    preprocessor = predictor.configuration_manager.preprocessor_class(verbose=False)
    data, _, _ = preprocessor.run_case(list(image_files), None, predictor.plans_manager,
                                       predictor.configuration_manager, predictor.dataset_json)
    data = torch.from_numpy(np.asarray(data, dtype=np.float32))
    if len(predictor.configuration_manager.patch_size) == 2:
        data = data[:, data.shape[1] // 2]
    if network.num_extra_channels:
        raise ValueError("attention maps of cascade models are not supported (they need the previous stage's "
                         "segmentation)")
    strides = np.prod(np.array(predictor.configuration_manager.pool_op_kernel_sizes), axis=0)
    data = pad_to_multiple(data, strides)
    maps = branch_attention_maps(network, data.to(device))

    def middle(array):
        return array[array.shape[0] // 2] if array.ndim == 3 else array

    fig, axes = new_figure(len(names), len(maps) + 1, figsize=(2.6 * (len(maps) + 1), 2.6 * len(names)),
                             squeeze=False)
    for m, name in enumerate(names):
        image = middle(data[m].cpu().numpy())
        axes[m, 0].imshow(image, cmap="gray")
        axes[m, 0].set_title(name)
        for s, stage_maps in enumerate(maps):
            axes[m, s + 1].imshow(image, cmap="gray")
            axes[m, s + 1].imshow(middle(stage_maps[m]), cmap="jet", alpha=0.5, vmin=0, vmax=1)
            axes[m, s + 1].set_title(f"{name}, stage {s}")
    for ax in axes.ravel():
        ax.axis("off")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, output, dpi=80)
    return output
