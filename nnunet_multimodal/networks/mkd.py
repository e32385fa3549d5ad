"""MKD networks (Li et al., AAAI 2020): two segmentors and the image alignment module (IAM).

- ``MKDNet``: the target segmentor S_t and the assistant segmentor S_a, both the plans' own network. In
  training both run on the same batch (target images and aligned assistant images concatenated), so one call
  gives everything the losses need; in inference the output is their ensemble: the mean of their logits, or
  (knob ``ensemble``) the mean of their probabilities, returned as logits whose softmax or sigmoid gives it, or
  one segmentor's logits alone.
- ``ImageAlignmentModule``: CycleGAN-style generators G (assistant -> target appearance) and F (target ->
  assistant), full-resolution residual networks that map intensities locally (appearance, not anatomy).
- ``DiscriminatorPair``: PatchGAN discriminators D_t (target appearance) and D_a (assistant appearance).
Each module computes all its outputs in one forward call, so DDP sees one forward per backward.
"""

from __future__ import annotations

import torch
from torch import nn

from nnunet_multimodal.networks.knob_checks import positive_int
from nnunet_multimodal.networks.plans_architecture import PlansArchitecture

DEFAULT_KNOBS = {
    "generator_width": 16,        # channels of the IAM generators (full resolution)
    "generator_blocks": 1,        # residual blocks per generator (why 1: docs/methods/mkd.md, "Where we chose")
    "discriminator_width": 16,    # channels of the first discriminator layer (doubled once)
    # what inference predicts with: the mean of the segmentors' "logits", or of their "softmax_probabilities"
    # (labels) or "sigmoid_probabilities" (regions), as the paper ensembles the two predictions; or one segmentor
    # alone, "target_segmentor" (what mkd-prepare writes: it measured better, docs/methods/mkd.md) or
    # "assistant_segmentor". "logits" stays the default here so plans written before mkd-prepare set it keep
    # predicting as they were trained to.
    "ensemble": "logits",
}
SINGLE_SEGMENTORS = ("target_segmentor", "assistant_segmentor")
ENSEMBLES = ("logits", "softmax_probabilities", "sigmoid_probabilities") + SINGLE_SEGMENTORS


def check_knobs(knobs: dict) -> None:
    for name, value in knobs.items():
        if name == "ensemble":
            if value not in ENSEMBLES:
                raise ValueError(f"mkd.ensemble must be one of {ENSEMBLES}, got {value!r}")
        else:
            positive_int(value, f"mkd.{name}")


def _mean_probabilities_as_logits(t: torch.Tensor, a: torch.Tensor, kind: str) -> torch.Tensor:
    """Logits whose softmax (sigmoid) is the mean of the two softmax (sigmoid) probabilities; in log space, so
    confident voxels do not round to log(0)."""
    t, a = t.float(), a.float()
    log_half = torch.log(torch.tensor(0.5, device=t.device))
    if kind == "softmax_probabilities":
        return torch.logaddexp(torch.log_softmax(t, 1), torch.log_softmax(a, 1)) + log_half
    log_p = torch.logaddexp(nn.functional.logsigmoid(t), nn.functional.logsigmoid(a)) + log_half
    log_not_p = torch.logaddexp(nn.functional.logsigmoid(-t), nn.functional.logsigmoid(-a)) + log_half
    return log_p - log_not_p


def ensemble_logits(target_logits, assistant_logits, kind: str = "logits"):
    """The two segmentors' ensemble (``kind``: one of ``ENSEMBLES`` but ``SINGLE_SEGMENTORS``), per
    deep-supervision level for lists."""
    if isinstance(target_logits, (list, tuple)):
        return [ensemble_logits(t, a, kind) for t, a in zip(target_logits, assistant_logits)]
    if kind == "logits":
        return (target_logits + assistant_logits) / 2
    return _mean_probabilities_as_logits(target_logits, assistant_logits, kind)


class MKDNet(nn.Module):
    def __init__(self, target_segmentor: nn.Module, assistant_segmentor: nn.Module, ensemble: str = "logits"):
        super().__init__()
        if ensemble not in ENSEMBLES:
            raise ValueError(f"ensemble must be one of {ENSEMBLES}, got {ensemble!r}")
        self.target = target_segmentor
        self.assistant = assistant_segmentor
        self.ensemble = ensemble

    def set_deep_supervision(self, enabled: bool) -> None:
        for segmentor in (self.target, self.assistant):
            segmentor.decoder.deep_supervision = enabled

    def forward(self, x: torch.Tensor):
        if not self.training and self.ensemble in SINGLE_SEGMENTORS:
            return (self.target if self.ensemble == "target_segmentor" else self.assistant)(x)
        target_logits, assistant_logits = self.target(x), self.assistant(x)
        if self.training:
            return {"logits": target_logits, "assistant_logits": assistant_logits}
        return ensemble_logits(target_logits, assistant_logits, self.ensemble)


def _norm(architecture: PlansArchitecture, channels: int) -> nn.Module:
    if architecture.norm_op is None:
        return nn.Identity()
    return architecture.norm_op(channels, **(architecture.norm_op_kwargs or {}))


class ResidualBlock(nn.Module):
    def __init__(self, architecture: PlansArchitecture, channels: int):
        super().__init__()
        conv = architecture.conv_op
        self.body = nn.Sequential(conv(channels, channels, 3, padding=1), _norm(architecture, channels),
                                  nn.ReLU(inplace=True), conv(channels, channels, 3, padding=1),
                                  _norm(architecture, channels))

    def forward(self, x):
        return x + self.body(x)


class AlignmentGenerator(nn.Module):
    """conv -> residual blocks -> conv at full resolution; the output is unbounded because nnU-Net's
    normalised intensities are (no tanh as in CycleGAN's [-1, 1] images)."""

    def __init__(self, architecture: PlansArchitecture, channels: int, width: int, num_blocks: int):
        super().__init__()
        conv = architecture.conv_op
        self.stem = nn.Sequential(conv(channels, width, 3, padding=1), _norm(architecture, width),
                                  nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(*[ResidualBlock(architecture, width) for _ in range(num_blocks)])
        self.head = conv(width, channels, 3, padding=1)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


class ImageAlignmentModule(nn.Module):
    def __init__(self, architecture: PlansArchitecture, channels: int, knobs: dict):
        super().__init__()
        check_knobs(knobs)
        width, blocks = knobs["generator_width"], knobs["generator_blocks"]
        self.to_target = AlignmentGenerator(architecture, channels, width, blocks)
        self.to_assistant = AlignmentGenerator(architecture, channels, width, blocks)

    def forward(self, assistant: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        aligned = self.to_target(assistant)
        target_as_assistant = self.to_assistant(target)
        return {"aligned": aligned, "reconstructed_assistant": self.to_assistant(aligned),
                "target_as_assistant": target_as_assistant,
                "reconstructed_target": self.to_target(target_as_assistant)}


class PatchDiscriminator(nn.Module):
    """Three strided convolutions and a 1-channel head: one real/fake score per receptive-field patch."""

    def __init__(self, architecture: PlansArchitecture, channels: int, width: int):
        super().__init__()
        conv = architecture.conv_op
        self.layers = nn.Sequential(
            conv(channels, width, 3, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True),
            conv(width, 2 * width, 3, stride=2, padding=1), _norm(architecture, 2 * width),
            nn.LeakyReLU(0.2, inplace=True),
            conv(2 * width, 2 * width, 3, padding=1), _norm(architecture, 2 * width), nn.LeakyReLU(0.2, inplace=True),
            conv(2 * width, 1, 3, padding=1))

    def forward(self, x):
        return self.layers(x)


class DiscriminatorPair(nn.Module):
    def __init__(self, architecture: PlansArchitecture, channels: int, knobs: dict):
        super().__init__()
        check_knobs(knobs)
        self.target = PatchDiscriminator(architecture, channels, knobs["discriminator_width"])
        self.assistant = PatchDiscriminator(architecture, channels, knobs["discriminator_width"])

    def forward(self, target_appearance: torch.Tensor, assistant_appearance: torch.Tensor):
        return self.target(target_appearance), self.assistant(assistant_appearance)
