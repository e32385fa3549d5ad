"""Loading Meta's Segment Anything checkpoints (``sam_vit_b/l/h_*.pth``) into the adapter network's encoder.

The files are plain state dicts (``image_encoder.*``, ``prompt_encoder.*``, ``mask_decoder.*``) read with
``torch.load(weights_only=True)``; nothing is downloaded. Only the image encoder is used: its keys are renamed
to timm's (``timm.models.vision_transformer_sam.checkpoint_filter_fn``), the absolute position embedding is
resampled to the encoder input (bicubic) and the relative position tables of the global-attention blocks are
resized linearly, as SAM itself does for other sizes.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed_nhwc
from timm.models.vision_transformer_sam import checkpoint_filter_fn
from torch import nn

from nnunet_multimodal.networks.sam_adapter import is_adapter_parameter
from nnunet_multimodal.networks.sam_config import ENCODER_VARIANTS
from nnunet_multimodal.user_errors import UserError

SAM_CHECKPOINT_ENV = "nnUNet_mm_SAM_checkpoint"
OFFICIAL_FILES = {"vit_b": "sam_vit_b_01ec64.pth", "vit_l": "sam_vit_l_0b3195.pth", "vit_h": "sam_vit_h_4b8939.pth"}
DOWNLOAD_PAGE = "https://github.com/facebookresearch/segment-anything#model-checkpoints"


class SAMCheckpointError(UserError):
    """A SAM checkpoint that is absent, unreadable or does not fit the configured encoder."""


def how_to_get(variant: str) -> str:
    knob = "the plans knob sam_adapter.checkpoint (nnunet-mm plans --set sam_adapter.checkpoint=/path/to/file)"
    if variant not in OFFICIAL_FILES:
        return (f"The {variant} variant has no official weights: set sam_adapter.pretrained=false for random "
                f"weights, or give a SAM-format state dict of this variant in ${SAM_CHECKPOINT_ENV} or {knob}")
    file = OFFICIAL_FILES[variant]
    return f"Download {file} from {DOWNLOAD_PAGE} and set {SAM_CHECKPOINT_ENV}=/path/to/{file} (or {knob})"


def resolve_checkpoint_path(knob: str | None, variant: str) -> Path:
    """The plans knob if set, else the environment variable; the file must exist."""
    if knob:
        path, source = Path(knob).expanduser(), "the plans knob sam_adapter.checkpoint"
    elif os.environ.get(SAM_CHECKPOINT_ENV):
        path, source = Path(os.environ[SAM_CHECKPOINT_ENV]).expanduser(), f"${SAM_CHECKPOINT_ENV}"
    else:
        raise SAMCheckpointError(f"No SAM checkpoint given for the {variant} image encoder. {how_to_get(variant)}.")
    if not path.is_file():
        raise SAMCheckpointError(f"SAM checkpoint {path} (from {source}) does not exist. {how_to_get(variant)}.")
    return path


def read_image_encoder_weights(path: Path, variant: str) -> dict[str, torch.Tensor]:
    """The image encoder's tensors under timm's names; prompt encoder and mask decoder are dropped."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for truncated, corrupt and pickled-object files
        raise SAMCheckpointError(
            f"Cannot read SAM checkpoint {path}: {type(error).__name__}: {str(error).splitlines()[0][:300]}. It must "
            f"be a plain state dict readable with torch.load(weights_only=True), as Meta's files are; a truncated "
            f"download gives this error too (compare the file size). {how_to_get(variant)}.") from error
    if not isinstance(state, dict) or "image_encoder.patch_embed.proj.weight" not in state:
        keys = sorted(state)[:5] if isinstance(state, dict) else type(state).__name__
        raise SAMCheckpointError(
            f"{path} is not a Segment Anything checkpoint: it has no image_encoder.* weights (found {keys}). "
            f"{how_to_get(variant)}.")
    return checkpoint_filter_fn(state, None)


def describe(weights: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(embed dim, number of blocks) of an image encoder state dict."""
    depth = 1 + max(int(k.split(".")[1]) for k in weights if k.startswith("blocks."))
    return weights["patch_embed.proj.weight"].shape[0], depth


def variant_of(weights: dict[str, torch.Tensor]) -> str | None:
    embed_dim, depth = describe(weights)
    return next((name for name, v in ENCODER_VARIANTS.items() if (v.embed_dim, v.depth) == (embed_dim, depth)),
                None)


def fit_to_encoder(weights: dict[str, torch.Tensor], encoder: nn.Module, path: Path,
                   variant: str) -> dict[str, torch.Tensor]:
    """Check that the file holds the configured variant and resize the position tables to the encoder input."""
    expected = ENCODER_VARIANTS[variant]
    found = variant_of(weights)
    if found != variant:
        embed_dim, depth = describe(weights)
        holds = f"a {found}" if found else "an unrecognised"
        wanted = OFFICIAL_FILES.get(variant, "a SAM-format file of that variant")
        fix = f"set sam_adapter.variant={found} in the plans, or point to {wanted}" if found else f"point to {wanted}"
        raise SAMCheckpointError(
            f"SAM checkpoint {path} holds {holds} image encoder (embed dim {embed_dim}, {depth} blocks) but the "
            f"plans ask for {variant} (embed dim {expected.embed_dim}, {expected.depth} blocks): {fix}.")
    target = {k: v for k, v in encoder.state_dict().items() if not is_adapter_parameter(k)}
    missing, unexpected = sorted(set(target) - set(weights)), sorted(set(weights) - set(target))
    if missing or unexpected:
        raise SAMCheckpointError(f"SAM checkpoint {path} does not match the {variant} image encoder: missing "
                                 f"{missing[:5]}, unexpected {unexpected[:5]}. {how_to_get(variant)}.")
    fitted = {}
    for key, value in weights.items():
        shape = target[key].shape
        if value.shape != shape and key.endswith("pos_embed"):
            value = resample_abs_pos_embed_nhwc(value, list(shape[1:3]))
        elif value.shape != shape and key.endswith(("rel_pos_h", "rel_pos_w")) and value.shape[1:] == shape[1:]:
            value = F.interpolate(value.float().T[None], size=shape[0], mode="linear")[0].T.to(value.dtype)
        if value.shape != shape:
            raise SAMCheckpointError(f"SAM checkpoint {path}: {key} has shape {tuple(value.shape)}, the {variant} "
                                     f"encoder needs {tuple(shape)}. {how_to_get(variant)}.")
        fitted[key] = value
    return fitted


def load_sam_encoder(encoder: nn.Module, path: Path, variant: str) -> dict[str, tuple[int, ...]]:
    """Copy the file's image encoder into ``encoder`` (adapters untouched); returns the resized tables'
    original shapes by key, for the log."""
    weights = read_image_encoder_weights(path, variant)
    fitted = fit_to_encoder(weights, encoder, path, variant)
    encoder.load_state_dict(fitted, strict=False)  # strict for SAM's part: fit_to_encoder matched every key
    return {k: tuple(weights[k].shape) for k in fitted if fitted[k].shape != weights[k].shape}
