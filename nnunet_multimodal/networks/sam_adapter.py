"""SAM cross-modality attention adapter network: the Segment Anything image encoder, shared by all modalities and
frozen, with adapters in every transformer block that fuse the modalities; a prompt-free decoder.

Shapes: x (B, M, H, W) z-scored modalities at the plans' patch size -> resized to the encoder input S x S ->
(B*M, 3, S, S) SAM inputs (the modalities batched through the one encoder) -> tokens (B*M, S/16, S/16, C) ->
per block: SAM's windowed/global attention, the cross-modality attention adapter (the M tokens at one position
attend to each other), SAM's MLP plus a parallel bottleneck MLP adapter -> SAM's neck (B*M, 256, S/16, S/16) ->
fused embedding (B, 256, S/16, S/16) -> upsampling decoder -> logits (B, K, S, S) -> resized to (H, W).
The encoder is timm's ``VisionTransformerSAM`` with these blocks; its parameter names are timm's, so Meta's
checkpoints load through ``sam_checkpoint.py``. See docs/methods/sam_adapter.md for the equations.
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d, resample_abs_pos_embed_nhwc, trunc_normal_
from timm.models.vision_transformer_sam import Block, VisionTransformerSAM, window_partition, window_unpartition
from torch import nn

from nnunet_multimodal.networks.sam_config import (
    DEFAULT_KNOBS,
    ENCODER_VARIANTS,
    SAM_PATCH_SIZE,
    check_knobs,
)
from nnunet_multimodal.networks.scff import availability_weights
from nnunet_multimodal.networks.segmentation_head import SegmentationHead


class CrossModalityAttentionAdapter(nn.Module):
    """At every token position, the M modality tokens attend to each other (absent modalities are not attended
    to), in a bottleneck of width d; the output projection starts at zero, so the adapter starts as identity."""

    def __init__(self, dim: int, bottleneck: int, num_heads: int, num_modalities: int):
        super().__init__()
        if bottleneck % num_heads:
            raise ValueError(f"the adapter bottleneck ({bottleneck} = adapter_ratio x encoder width) must be "
                             f"divisible by sam_adapter.adapter_heads ({num_heads}); change either knob")
        self.num_modalities = num_modalities
        self.num_heads = num_heads
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.down = nn.Linear(dim, bottleneck)
        self.modality_embedding = nn.Parameter(trunc_normal_(torch.empty(num_modalities, bottleneck), std=0.02))
        self.qkv = nn.Linear(bottleneck, 3 * bottleneck)
        self.act = nn.GELU()
        self.up = nn.Linear(bottleneck, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor, available: torch.Tensor | None = None) -> torch.Tensor:
        bm, h, w, _ = x.shape
        m, heads = self.num_modalities, self.num_heads
        b = bm // m
        tokens = self.down(self.norm(x)).view(b, m, h * w, -1).transpose(1, 2) + self.modality_embedding
        d = tokens.shape[-1]
        # (3, B, positions, heads, M, d/heads): attention runs over the modality axis
        q, k, v = self.qkv(tokens).view(b, h * w, m, 3, heads, d // heads).permute(3, 0, 1, 4, 2, 5)
        scores = q.float() @ k.float().transpose(-1, -2) / math.sqrt(d // heads)
        if available is not None:
            scores = scores.masked_fill(~available.bool().view(b, 1, 1, 1, m), float("-inf"))
        attended = (scores.softmax(dim=-1) @ v.float()).to(v.dtype)
        attended = attended.permute(0, 3, 1, 2, 4).reshape(bm, h, w, d)
        return self.up(self.act(attended))


class BottleneckAdapter(nn.Module):
    """Parallel to a block's MLP: up(GELU(down(z))), the up projection starting at zero."""

    def __init__(self, dim: int, bottleneck: int):
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.act = nn.GELU()
        self.up = nn.Linear(bottleneck, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(z)))


class CrossModalityAdapterBlock(Block):
    """timm's SAM block (same parameter names, so SAM weights load as they are) with the two adapters."""

    def __init__(self, *args, num_modalities: int, adapter_ratio: float, adapter_heads: int, **kwargs):
        super().__init__(*args, **kwargs)
        dim = self.norm1.normalized_shape[0]
        bottleneck = max(1, round(dim * adapter_ratio))
        self.modality_adapter = CrossModalityAttentionAdapter(dim, bottleneck, adapter_heads, num_modalities)
        self.mlp_adapter = BottleneckAdapter(dim, bottleneck)

    def forward(self, x: torch.Tensor, available: torch.Tensor | None = None) -> torch.Tensor:
        b, h, w, c = x.shape
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            x, pad_hw = window_partition(x, self.window_size)
            x = window_unpartition(self.attn(x), self.window_size, (h, w), pad_hw)
        else:
            x = self.attn(x)
        x = shortcut + x
        x = x + self.modality_adapter(x, available)
        z = self.norm2(x)
        return x + self.mlp(z) + self.mlp_adapter(z)


def build_sam_encoder(variant: str, input_size: int, num_modalities: int, adapter_ratio: float,
                      adapter_heads: int) -> VisionTransformerSAM:
    """timm's SAM ViT at the given input size (position embeddings sized for it) with adapter blocks."""
    shape = ENCODER_VARIANTS[variant]
    encoder = VisionTransformerSAM(
        img_size=input_size, patch_size=SAM_PATCH_SIZE, embed_dim=shape.embed_dim, depth=shape.depth,
        num_heads=shape.num_heads, global_attn_indexes=shape.global_attn_indexes, window_size=shape.window_size,
        use_rel_pos=True, neck_chans=shape.neck_channels, num_classes=0,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),  # SAM's (timm's default eps is 1e-5)
        block_fn=partial(CrossModalityAdapterBlock, num_modalities=num_modalities, adapter_ratio=adapter_ratio,
                         adapter_heads=adapter_heads))
    # SAM initialises them to zero and loads them; random-weight encoders need positions to tell patches apart
    trunc_normal_(encoder.pos_embed, std=0.02)
    return encoder


class ModalityToRGB(nn.Module):
    """(B, M, H, W) z-scored modalities -> (B*M, 3, H, W) encoder inputs, modality-major within a sample."""

    def __init__(self, num_modalities: int, mapping: str):
        super().__init__()
        self.num_modalities = num_modalities
        self.projection = None
        if mapping == "learned":
            # per modality an affine map 1 -> 3 channels, starting as the plain repetition
            self.projection = nn.Conv2d(num_modalities, 3 * num_modalities, 1, groups=num_modalities)
            nn.init.ones_(self.projection.weight)
            nn.init.zeros_(self.projection.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, m, h, w = x.shape
        rgb = x.unsqueeze(2).expand(b, m, 3, h, w) if self.projection is None else self.projection(x)
        return rgb.reshape(b * m, 3, h, w)


class ModalityFusion(nn.Module):
    """Z = sum_m W_m (a_m M/|S|) E_m: a 1x1 convolution over the concatenated modality embeddings, starting as
    their mean over the available modalities."""

    def __init__(self, num_modalities: int, channels: int):
        super().__init__()
        self.num_modalities = num_modalities
        self.project = nn.Conv2d(num_modalities * channels, channels, 1)
        with torch.no_grad():
            self.project.weight.copy_(torch.eye(channels).repeat(1, num_modalities)[..., None, None]
                                      / num_modalities)
            self.project.bias.zero_()

    def forward(self, embeddings: torch.Tensor, available: torch.Tensor | None = None) -> torch.Tensor:
        bm, c, h, w = embeddings.shape
        m = self.num_modalities
        per_modality = embeddings.view(bm // m, m, c, h, w)
        if available is not None:
            per_modality = per_modality * availability_weights(available, m, embeddings).view(-1, m, 1, 1, 1)
        return self.project(per_modality.reshape(bm // m, m * c, h, w))


class UpsamplingDecoder(nn.Module):
    """Prompt-free decoder: per entry of ``channels`` a x2 transposed convolution and a 3x3 convolution (each
    followed by LayerNorm2d and GELU, as in SAM's mask-decoder upscaling), then 1x1 convolution to the K outputs."""

    def __init__(self, in_channels: int, channels: list[int], num_outputs: int):
        super().__init__()
        stages = []
        for out in channels:
            stages.append(nn.Sequential(
                nn.ConvTranspose2d(in_channels, out, 2, stride=2), LayerNorm2d(out), nn.GELU(),
                nn.Conv2d(out, out, 3, padding=1), LayerNorm2d(out), nn.GELU()))
            in_channels = out
        self.stages = nn.Sequential(*stages)
        self.head = SegmentationHead(nn.Conv2d, in_channels, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(x))


class SAMAdapterNet(nn.Module):
    """Logits (B, K, H, W) for z-scored modalities (B, M, H, W); ``available`` (B, M) masks absent modalities."""

    def __init__(self, num_modalities: int, num_outputs: int, knobs: dict | None = None):
        super().__init__()
        knobs = {**DEFAULT_KNOBS, **(knobs or {})}
        check_knobs(knobs)
        self.num_modalities = num_modalities
        self.variant = knobs["variant"]
        self.input_size = knobs["input_size"]
        self.input_mapping = ModalityToRGB(num_modalities, knobs["input_mapping"])
        self.encoder = build_sam_encoder(self.variant, self.input_size, num_modalities, knobs["adapter_ratio"],
                                         knobs["adapter_heads"])
        neck_channels = ENCODER_VARIANTS[self.variant].neck_channels
        self.fusion = ModalityFusion(num_modalities, neck_channels)
        self.decoder = UpsamplingDecoder(neck_channels, list(knobs["decoder_channels"]), num_outputs)
        self.freeze_sam(knobs["trainable"], knobs["unfreeze_last_blocks"])

    def freeze_sam(self, trainable: str, unfreeze_last_blocks: int) -> None:
        """SAM's own encoder weights are frozen except what the knobs name; everything we add is trainable."""
        sam_parameters = {id(p) for name, p in self.encoder.named_parameters() if not is_adapter_parameter(name)}
        train = set()
        if trainable == "all":
            train = sam_parameters
        else:
            if trainable == "neck":
                train |= {id(p) for p in self.encoder.neck.parameters()}
            if unfreeze_last_blocks:
                train |= {id(p) for block in self.encoder.blocks[-unfreeze_last_blocks:] for p in block.parameters()}
        for p in self.parameters():
            p.requires_grad_(id(p) not in sam_parameters or id(p) in train)

    def encode(self, x: torch.Tensor, available: torch.Tensor | None = None) -> torch.Tensor:
        """(B, M, S, S) -> SAM's neck embeddings (B*M, neck channels, S/16, S/16) after the adapted blocks."""
        tokens = self.encoder.patch_embed(self.input_mapping(x))
        tokens = tokens + resample_abs_pos_embed_nhwc(self.encoder.pos_embed, tokens.shape[1:3])
        for block in self.encoder.blocks:
            tokens = block(tokens, available)
        return self.encoder.neck(tokens.permute(0, 3, 1, 2))

    def forward(self, x: torch.Tensor, available: torch.Tensor | None = None) -> torch.Tensor:
        if x.shape[1] != self.num_modalities:
            raise ValueError(f"{type(self).__name__} was built for {self.num_modalities} modalities, got an input "
                             f"with {x.shape[1]} channels")
        patch = tuple(x.shape[2:])
        size = (self.input_size, self.input_size)
        if patch != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False,
                              antialias=max(patch) > self.input_size)
        fused = self.fusion(self.encode(x, available), available)
        logits = self.decoder(fused)
        if tuple(logits.shape[2:]) != patch:
            logits = F.interpolate(logits, size=patch, mode="bilinear", align_corners=False)
        return logits


def is_adapter_parameter(name: str) -> bool:
    """Encoder parameters we add to SAM's blocks (named relative to the encoder)."""
    return ".modality_adapter." in name or ".mlp_adapter." in name
