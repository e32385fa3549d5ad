"""The plugin's training figures, written into the fold folder next to nnU-Net's progress.png: the extra loss
terms' progress and MKD's image alignment."""

from __future__ import annotations

import numpy as np
import torch

from nnunet_multimodal.figures import new_figure, save_figure


def plot_loss_terms(logs: dict, keys: list[str], filename: str) -> None:
    loss_keys = [k for k in keys if k.startswith("loss_")]
    weight_keys = [k for k in keys if k.startswith("weight_")]
    fig, (ax_loss, ax_weight) = new_figure(2, 1, figsize=(10, 8), sharex=True)
    for key in loss_keys:
        ax_loss.plot(range(len(logs[key])), logs[key], label=key)
    for key in weight_keys:
        ax_weight.plot(range(len(logs[key])), logs[key], label=key)
    ax_loss.set_ylabel("training loss (unweighted)")
    ax_weight.set_ylabel("weight")
    ax_weight.set_xlabel("epoch")
    for ax in (ax_loss, ax_weight):
        ax.legend(loc="upper right")
    save_figure(fig, filename)


def _display_slice(image: torch.Tensor) -> np.ndarray:
    """First channel; the middle slice of the first axis in 3D."""
    image = image[0].float().numpy()
    return image[image.shape[0] // 2] if image.ndim == 3 else image


def plot_alignment(assistant: torch.Tensor, aligned: torch.Tensor, target: torch.Tensor, filename: str,
                   epoch: int) -> None:
    panels = (("assistant image", assistant), ("aligned (IAM output)", aligned), ("a target image", target))
    fig, axes = new_figure(1, 3, figsize=(12, 4.8))
    for ax, (title, image) in zip(axes, panels):
        ax.imshow(_display_slice(image), cmap="gray")
        ax.set_title(title, fontsize=11)
        ax.axis("off")
    fig.suptitle(f"MKD image alignment, epoch {epoch} (normalised intensities; each panel its own grey scale)",
                 fontsize=11)
    save_figure(fig, filename)
