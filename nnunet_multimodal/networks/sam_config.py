"""The SAM adapter's encoder variants and knobs, without timm: nnU-Net imports every trainer module to find one
by name, so the trainer checks knobs from here and imports the network (and timm) only when it builds it."""

from __future__ import annotations

from dataclasses import dataclass

from nnunet_multimodal.networks.knob_checks import fraction, non_negative_int, positive_int

SAM_PATCH_SIZE = 16


@dataclass(frozen=True)
class EncoderVariant:
    """The shape of one SAM image encoder (Kirillov et al. 2023, Table/Appendix; Meta's ``build_sam.py``)."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    window_size: int = 14
    neck_channels: int = 256


ENCODER_VARIANTS = {
    "vit_b": EncoderVariant(768, 12, 12, (2, 5, 8, 11)),
    "vit_l": EncoderVariant(1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": EncoderVariant(1280, 32, 16, (7, 15, 23, 31)),
    # not a SAM model: random weights, for tests and CPU smoke runs only
    "tiny": EncoderVariant(64, 4, 4, (1, 3), window_size=4, neck_channels=32),
}
INPUT_MAPPINGS = ("repeat", "learned")
TRAINABLE = ("adapters", "neck", "all")

DEFAULT_KNOBS = {
    "variant": "vit_b",             # SAM image encoder: vit_b, vit_l, vit_h, or tiny (random, tests only)
    "checkpoint": None,             # SAM checkpoint file; None: $nnUNet_mm_SAM_checkpoint
    "pretrained": True,             # False: random encoder weights (tiny runs, speed benchmarks; never real work)
    "input_size": 256,              # encoder input S (multiple of 16); patches are resized to S x S and back
    "input_mapping": "repeat",      # modality -> RGB: "repeat" the z-scores, or a "learned" per-modality 1x1 map
    "adapter_ratio": 0.25,          # adapter bottleneck width as a fraction of the encoder width
    "adapter_heads": 4,             # heads of the cross-modality attention
    "trainable": "adapters",        # "adapters" (+ fusion, decoder), "neck" (also SAM's neck), "all"
    "unfreeze_last_blocks": 0,      # additionally train the last N transformer blocks
    "decoder_channels": [128, 64, 32, 16],  # one x2 upsampling stage per entry
}


def check_knobs(knobs: dict) -> None:
    """Reject knob values the network cannot be built with, naming the knob and the plans section."""
    where = "configurations[...]['multimodal']['sam_adapter'] in the plans (nnunet-mm plans --set sam_adapter.KNOB=...)"
    if knobs["variant"] not in ENCODER_VARIANTS:
        raise ValueError(f"sam_adapter.variant must be one of {sorted(ENCODER_VARIANTS)}, got {knobs['variant']!r}; "
                         f"fix {where}")
    size = knobs["input_size"]
    if not isinstance(size, int) or size < SAM_PATCH_SIZE or size % SAM_PATCH_SIZE:
        raise ValueError(f"sam_adapter.input_size must be a multiple of {SAM_PATCH_SIZE}, got {size!r}; fix {where}")
    for name, allowed in (("input_mapping", INPUT_MAPPINGS), ("trainable", TRAINABLE)):
        if knobs[name] not in allowed:
            raise ValueError(f"sam_adapter.{name} must be one of {allowed}, got {knobs[name]!r}; fix {where}")
    if not isinstance(knobs["decoder_channels"], list) or not knobs["decoder_channels"]:
        raise ValueError(f"sam_adapter.decoder_channels needs a list of at least one stage's channels, got "
                         f"{knobs['decoder_channels']!r}; fix {where}")
    depth = ENCODER_VARIANTS[knobs["variant"]].depth
    try:
        fraction(knobs["adapter_ratio"], "sam_adapter.adapter_ratio")
        positive_int(knobs["adapter_heads"], "sam_adapter.adapter_heads")
        non_negative_int(knobs["unfreeze_last_blocks"], "sam_adapter.unfreeze_last_blocks")
        for channels in knobs["decoder_channels"]:
            positive_int(channels, "each of sam_adapter.decoder_channels")
    except ValueError as e:
        raise ValueError(f"{e}; fix {where}") from e
    if knobs["unfreeze_last_blocks"] > depth:
        raise ValueError(f"sam_adapter.unfreeze_last_blocks must be in 0..{depth} for {knobs['variant']}, got "
                         f"{knobs['unfreeze_last_blocks']!r}; fix {where}")
