"""SAM adapter network and SAM checkpoint loading, on tiny random encoders (no SAM file is needed)."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed_nhwc
from timm.models.vision_transformer_sam import VisionTransformerSAM, get_rel_pos
from torch import nn

from nnunet_multimodal.networks.sam_adapter import (
    ENCODER_VARIANTS,
    CrossModalityAttentionAdapter,
    ModalityFusion,
    SAMAdapterNet,
    is_adapter_parameter,
)
from nnunet_multimodal.networks.sam_checkpoint import (
    SAM_CHECKPOINT_ENV,
    SAMCheckpointError,
    load_sam_encoder,
    resolve_checkpoint_path,
)

TINY = {"variant": "tiny", "input_size": 64, "decoder_channels": [16, 8]}


def make(modalities=3, outputs=3, **knobs):
    torch.manual_seed(0)
    return SAMAdapterNet(modalities, outputs, {**TINY, **knobs})


def perturb_adapters(net: nn.Module) -> None:
    """Adapters start as identity (zero up projections); give them weights so that they act."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if ".up." in name:
                p.normal_(0, 0.2)


def sam_format_state_dict(variant: str = "tiny", img_size: int = 256, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random image encoder saved the way Meta's sam_vit_*.pth files are: ``image_encoder.*`` keys with
    ``mlp.lin1/lin2``, plus prompt-encoder and mask-decoder entries that the loader must ignore."""
    shape = ENCODER_VARIANTS[variant]
    torch.manual_seed(seed)
    encoder = VisionTransformerSAM(
        img_size=img_size, patch_size=16, embed_dim=shape.embed_dim, depth=shape.depth, num_heads=shape.num_heads,
        global_attn_indexes=shape.global_attn_indexes, window_size=shape.window_size, use_rel_pos=True,
        neck_chans=shape.neck_channels, num_classes=0, norm_layer=partial(nn.LayerNorm, eps=1e-6))
    state = {}
    for key, value in encoder.state_dict().items():
        if "pos" in key or "norm" in key:  # zeros/ones at construction: make every tensor distinguishable
            value = value + 0.1 * torch.randn_like(value)
        state["image_encoder." + key.replace("mlp.fc", "mlp.lin")] = value
    state["prompt_encoder.point_embeddings.0.weight"] = torch.zeros(1, 256)
    state["mask_decoder.iou_token.weight"] = torch.zeros(1, 256)
    return state


def write_sam_checkpoint(path: Path, variant: str = "tiny", img_size: int = 256) -> dict[str, torch.Tensor]:
    state = sam_format_state_dict(variant, img_size)
    torch.save(state, path)
    return state


@pytest.mark.parametrize("modalities", [2, 3, 4])
def test_logits_at_the_patch_size_for_2_3_4_modalities(modalities):
    net = make(modalities, outputs=4)
    x = torch.randn(2, modalities, 48, 40)  # non-square patch, resized to 64 x 64 and back
    assert net.train()(x).shape == (2, 4, 48, 40)
    with torch.no_grad():
        assert net.eval()(x).shape == (2, 4, 48, 40)
    with pytest.raises(ValueError, match=f"built for {modalities} modalities"):
        net(torch.randn(1, modalities + 1, 48, 40))


def test_adapted_encoder_starts_as_the_sam_encoder():
    net = make(modalities=2, input_size=128).eval()
    shape = ENCODER_VARIANTS["tiny"]
    reference = VisionTransformerSAM(
        img_size=128, patch_size=16, embed_dim=shape.embed_dim, depth=shape.depth, num_heads=shape.num_heads,
        global_attn_indexes=shape.global_attn_indexes, window_size=shape.window_size, use_rel_pos=True,
        neck_chans=shape.neck_channels, num_classes=0, norm_layer=partial(nn.LayerNorm, eps=1e-6)).eval()
    reference.load_state_dict({k: v for k, v in net.encoder.state_dict().items() if not is_adapter_parameter(k)})
    x = torch.randn(2, 2, 128, 128)
    with torch.no_grad():
        images = x.unsqueeze(2).expand(2, 2, 3, 128, 128).reshape(4, 3, 128, 128)  # each modality as grey RGB
        assert torch.allclose(net.encode(x), reference.forward_features(images), atol=1e-5)


def test_adapters_fuse_modalities_inside_the_encoder():
    net = make(modalities=2)
    x = torch.randn(1, 2, 64, 64, requires_grad=True)
    # frozen SAM alone: modality 1's embedding does not depend on modality 0's image
    (grad,) = torch.autograd.grad(net.encode(x)[1].sum(), x)
    assert grad[0, 0].abs().max() == 0
    assert grad[0, 1].abs().max() > 0
    perturb_adapters(net)
    (grad,) = torch.autograd.grad(net.encode(x)[1].sum(), x)
    assert grad[0, 0].abs().max() > 0


def reference_cross_modality_attention(adapter: CrossModalityAttentionAdapter, x, available):
    """The adapter written out token by token: softmax over the available modalities at one position."""
    bm, h, w, c = x.shape
    m, heads = adapter.num_modalities, adapter.num_heads
    out = torch.zeros_like(x)
    for b in range(bm // m):
        for i in range(h):
            for j in range(w):
                tokens = torch.stack([adapter.down(adapter.norm(x[b * m + n, i, j])) + adapter.modality_embedding[n]
                                      for n in range(m)])
                d = tokens.shape[1]
                q, k, v = adapter.qkv(tokens).split(d, dim=1)
                attended = torch.zeros(m, d)
                for head in range(heads):
                    part = slice(head * d // heads, (head + 1) * d // heads)
                    for n in range(m):
                        scores = torch.tensor([q[n, part] @ k[o, part] / math.sqrt(d // heads) if available[b, o]
                                               else -math.inf for o in range(m)])
                        attended[n, part] = scores.softmax(0) @ v[:, part]
                for n in range(m):
                    out[b * m + n, i, j] = adapter.up(F.gelu(attended[n]))
    return out


def test_cross_modality_attention_by_hand():
    torch.manual_seed(0)
    adapter = CrossModalityAttentionAdapter(dim=8, bottleneck=4, num_heads=2, num_modalities=3)
    nn.init.normal_(adapter.up.weight)
    x = torch.randn(2 * 3, 2, 2, 8)
    available = torch.tensor([[True, True, True], [True, False, True]])
    with torch.no_grad():
        for mask in (available, None):
            expected = reference_cross_modality_attention(adapter, x, torch.ones(2, 3, dtype=torch.bool)
                                                          if mask is None else mask)
            assert torch.allclose(adapter(x, mask), expected, atol=1e-5)
        # a modality alone attends to itself only: up(GELU(v_self))
        alone = torch.tensor([[True, False, False]] * 2)
        tokens = adapter.down(adapter.norm(x[0])) + adapter.modality_embedding[0]
        v = adapter.qkv(tokens)[..., 8:]
        assert torch.allclose(adapter(x, alone)[0], adapter.up(F.gelu(v)), atol=1e-6)


def test_absent_modality_does_not_change_the_output():
    net = make(modalities=3).eval()
    perturb_adapters(net)
    x = torch.randn(2, 3, 64, 64)
    changed = x.clone()
    changed[:, 1] = torch.randn(2, 64, 64)
    available = torch.tensor([[True, False, True]] * 2)
    with torch.no_grad():
        assert torch.allclose(net(x, available), net(changed, available), atol=1e-5)
        assert not torch.allclose(net(x), net(changed), atol=1e-3)


def test_fusion_starts_as_the_mean_over_available_modalities():
    fusion = ModalityFusion(num_modalities=3, channels=2)
    embeddings = torch.tensor([1.0, 2.0, 10.0, 20.0, 100.0, 200.0]).view(3, 2, 1, 1)  # one sample, 3 modalities
    with torch.no_grad():
        assert fusion(embeddings).flatten().tolist() == pytest.approx([37.0, 74.0])
        available = torch.tensor([[True, False, True]])
        assert fusion(embeddings, available).flatten().tolist() == pytest.approx([50.5, 101.0])


def expected_trainable(name: str, trainable: str = "adapters", last_blocks: int = 0, depth: int = 4) -> bool:
    if not name.startswith("encoder.") or is_adapter_parameter(name) or trainable == "all":
        return True
    if trainable == "neck" and name.startswith("encoder.neck."):
        return True
    return any(name.startswith(f"encoder.blocks.{i}.") for i in range(depth - last_blocks, depth))


@pytest.mark.parametrize("knobs", [{}, {"trainable": "neck", "unfreeze_last_blocks": 1}, {"trainable": "all"},
                                   {"input_mapping": "learned"}])
def test_trainable_parameters_follow_the_knobs(knobs):
    net = make(**knobs)
    for name, p in net.named_parameters():
        assert p.requires_grad == expected_trainable(name, knobs.get("trainable", "adapters"),
                                                     knobs.get("unfreeze_last_blocks", 0)), name


def test_only_trainable_parameters_get_gradients_and_frozen_ones_stay_bit_identical():
    from nnunet_multimodal.training.sam_adapter import nnUNetTrainerSAMAdapter

    net = make()
    frozen = {n: p.detach().clone() for n, p in net.named_parameters() if not p.requires_grad}
    trainable = {n: p.detach().clone() for n, p in net.named_parameters() if p.requires_grad}
    assert frozen
    assert trainable
    owner = SimpleNamespace(network=net, initial_lr=1e-3, weight_decay=0.01, num_epochs=10)
    optimizer, _ = nnUNetTrainerSAMAdapter.configure_optimizers(owner)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == \
        sum(p.numel() for p in trainable.values())
    x, target = torch.randn(2, 3, 64, 64), torch.randint(0, 3, (2, 64, 64))
    for _ in range(2):  # the zero-initialised up projections pass gradients on from the second step
        optimizer.zero_grad()
        F.cross_entropy(net(x), target).backward()
        for name, p in net.named_parameters():
            assert (p.grad is not None) == (name in trainable), name
        optimizer.step()
    for name, p in net.named_parameters():
        if name in frozen:
            assert torch.equal(p, frozen[name]), name
        else:
            assert not torch.equal(p, trainable[name]), name


def test_loading_a_sam_format_checkpoint_resizes_position_tables(tmp_path):
    file = tmp_path / "sam_tiny.pth"
    state = write_sam_checkpoint(file, img_size=256)  # a 16 x 16 token grid
    net = make(input_size=128)  # an 8 x 8 grid
    up_before = net.encoder.blocks[0].modality_adapter.up.weight.clone()
    resized = load_sam_encoder(net.encoder, file, "tiny")
    loaded = net.encoder.state_dict()
    global_blocks = ENCODER_VARIANTS["tiny"].global_attn_indexes
    assert set(resized) == {"pos_embed"} | {f"blocks.{i}.attn.rel_pos_{a}" for i in global_blocks for a in "hw"}
    for key, value in state.items():
        if not key.startswith("image_encoder."):
            continue
        name = key[len("image_encoder."):].replace("mlp.lin", "mlp.fc")
        if name == "pos_embed":
            assert torch.equal(loaded[name], resample_abs_pos_embed_nhwc(value, [8, 8]))
        elif name in resized:
            # the same relative-position bias SAM computes when it resizes the table on the fly
            assert value.shape[0] == 31
            assert loaded[name].shape[0] == 15
            assert torch.allclose(get_rel_pos(8, 8, loaded[name]), get_rel_pos(8, 8, value))
        else:
            assert torch.equal(loaded[name], value), name
    assert torch.equal(net.encoder.blocks[0].modality_adapter.up.weight, up_before)


def test_checkpoint_path_from_knob_or_environment(tmp_path, monkeypatch):
    file, other = tmp_path / "a.pth", tmp_path / "b.pth"
    file.write_bytes(b"x")
    other.write_bytes(b"x")
    monkeypatch.setenv(SAM_CHECKPOINT_ENV, str(other))
    assert resolve_checkpoint_path(str(file), "vit_b") == file
    assert resolve_checkpoint_path(None, "vit_b") == other
    monkeypatch.setenv(SAM_CHECKPOINT_ENV, str(tmp_path / "absent.pth"))
    with pytest.raises(SAMCheckpointError, match=f"absent.pth \\(from \\${SAM_CHECKPOINT_ENV}\\) does not exist"):
        resolve_checkpoint_path(None, "vit_b")
    monkeypatch.delenv(SAM_CHECKPOINT_ENV)
    with pytest.raises(SAMCheckpointError, match=f"No SAM checkpoint.*sam_vit_l_0b3195.pth.*{SAM_CHECKPOINT_ENV}="):
        resolve_checkpoint_path(None, "vit_l")
    with pytest.raises(SAMCheckpointError, match="tiny variant has no official weights.*pretrained=false"):
        resolve_checkpoint_path(None, "tiny")


class NotAWeight:
    pass


def test_unusable_sam_checkpoints_give_clear_errors(tmp_path):
    encoder = make().encoder
    good = tmp_path / "good.pth"
    state = write_sam_checkpoint(good)
    cases = {}
    cases["truncated.pth"] = (good.read_bytes()[:5000], "Cannot read SAM checkpoint .*truncated.pth.*file size")
    cases["garbage.pth"] = (b"not a checkpoint" * 10, "Cannot read SAM checkpoint .*garbage.pth")
    for name, (content, _) in cases.items():
        (tmp_path / name).write_bytes(content)
    torch.save({"weights": NotAWeight()}, tmp_path / "pickled.pth")
    cases["pickled.pth"] = (None, "Cannot read SAM checkpoint .*pickled.pth.*weights_only=True")
    torch.save({"network_weights": {}}, tmp_path / "nnunet.pth")
    cases["nnunet.pth"] = (None, "nnunet.pth is not a Segment Anything checkpoint.*network_weights")
    vit_b = {"image_encoder.patch_embed.proj.weight": torch.zeros(768, 3, 16, 16),
             **{f"image_encoder.blocks.{i}.norm1.weight": torch.zeros(768) for i in range(12)}}
    torch.save(vit_b, tmp_path / "sam_vit_b.pth")
    cases["sam_vit_b.pth"] = (None, "sam_vit_b.pth holds a vit_b image encoder \\(embed dim 768, 12 blocks\\) but "
                                    "the plans ask for tiny.*set sam_adapter.variant=vit_b")
    torch.save({**state, "image_encoder.neck.0.weight": torch.zeros(16, 64, 1, 1)}, tmp_path / "neck.pth")
    cases["neck.pth"] = (None, "neck.pth: neck.0.weight has shape \\(16, 64, 1, 1\\).*needs \\(32, 64, 1, 1\\)")
    for name, (_, message) in cases.items():
        with pytest.raises(SAMCheckpointError, match=message):
            load_sam_encoder(encoder, tmp_path / name, "tiny")


@pytest.mark.parametrize("knob, value, message", [
    ("variant", "vit_x", "variant must be one of"), ("input_size", 100, "multiple of 16"),
    ("trainable", "decoder", "trainable must be one of"), ("unfreeze_last_blocks", 5, "in 0..4 for tiny"),
    ("adapter_heads", 3, "divisible by sam_adapter.adapter_heads"),
    ("adapter_heads", 0, "adapter_heads must be a positive integer"),
    ("adapter_ratio", 0, r"adapter_ratio must be a number in \(0, 1\]"),
    ("decoder_channels", [16, 0], "decoder_channels must be a positive integer"),
    ("decoder_channels", 16, "decoder_channels needs a list"),
    ("unfreeze_last_blocks", "2", "unfreeze_last_blocks must be a non-negative integer")])
def test_invalid_knobs_name_the_knob(knob, value, message):
    with pytest.raises(ValueError, match=message):
        make(**{knob: value})
