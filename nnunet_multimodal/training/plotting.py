"""The extra loss terms' progress plot, written next to nnU-Net's progress.png."""

from __future__ import annotations

import matplotlib

matplotlib.use("agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_loss_terms(logs: dict, keys: list[str], filename: str) -> None:
    loss_keys = [k for k in keys if k.startswith("loss_")]
    weight_keys = [k for k in keys if k.startswith("weight_")]
    fig, (ax_loss, ax_weight) = plt.subplots(2, 1, figsize=(10, 8), sharex=True)
    for key in loss_keys:
        ax_loss.plot(range(len(logs[key])), logs[key], label=key)
    for key in weight_keys:
        ax_weight.plot(range(len(logs[key])), logs[key], label=key)
    ax_loss.set_ylabel("training loss (unweighted)")
    ax_weight.set_ylabel("weight")
    ax_weight.set_xlabel("epoch")
    for ax in (ax_loss, ax_weight):
        ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(filename)
    plt.close(fig)
