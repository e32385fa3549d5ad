"""DDP on CPU (gloo, 2 processes): our networks train under DistributedDataParallel without
find_unused_parameters, with modality dropout, and their gradients are synchronised."""

import os
import socket
from types import MethodType, SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from arch_helpers import architecture

from nnunet_multimodal.losses.attention_distillation import CrossModalAttentionDistillation
from nnunet_multimodal.networks.cmsad import CMSADNet
from nnunet_multimodal.networks.maml import MAMLNet
from nnunet_multimodal.networks.mkd import DEFAULT_KNOBS as MKD_KNOBS
from nnunet_multimodal.networks.mkd import DiscriminatorPair, ImageAlignmentModule
from nnunet_multimodal.networks.sam_adapter import SAMAdapterNet
from nnunet_multimodal.training.mkd import nnUNetTrainerMKD
from nnunet_multimodal.training.modality_dropout import sample_availability, zero_unavailable


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, result_folder: str, network: str):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    torch.manual_seed(0)  # same initial weights on both ranks
    net = {"cmsad": lambda: CMSADNet(architecture(dim=2), 3, 0, 3, (16, 16), deep_supervision=True),
           "maml": lambda: MAMLNet(architecture(dim=2), 3, 0, 3, deep_supervision=True),
           # SAM's frozen encoder weights have requires_grad=False: DDP leaves them out of its reduction
           "sam": lambda: SAMAdapterNet(3, 3, {"variant": "tiny", "pretrained": False, "input_size": 32,
                                               "decoder_channels": [16, 16, 8, 8]})}[network]()
    model = torch.nn.parallel.DistributedDataParallel(net)  # no find_unused_parameters, as nnU-Net
    distill = CrossModalAttentionDistillation(stages=(-2, -1))
    optimizer = torch.optim.SGD(model.parameters(), 0.01)
    generator = torch.Generator().manual_seed(100 + rank)  # different data and dropout per rank
    for _ in range(3):
        x = torch.randn(2, 3, 16, 16, generator=generator)
        available = sample_availability(2, 3, 0.5, generator)
        out = model(zero_unavailable(x, available), available=available)
        if network == "cmsad":
            loss = sum(o.float().mean() for o in out["logits"]) + 0.1 * distill(out["branch_features"], 3, available)
        elif network == "maml":
            loss = out["logits"].mean() + sum(sum(o.mean() for o in b) for b in out["branch_logits"])
        else:
            loss = out.float().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    grads = torch.cat([p.grad.flatten() for p in net.parameters() if p.requires_grad])
    weights = torch.cat([p.detach().flatten() for p in net.parameters()])
    torch.save({"grads": grads, "weights": weights}, os.path.join(result_folder, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.parametrize("network", ["cmsad", "maml", "sam"])
def test_networks_under_ddp_with_modality_dropout(tmp_path, network):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path), network), nprocs=2, join=True)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert torch.allclose(rank0["grads"], rank1["grads"], atol=1e-6)   # all-reduced
    assert torch.allclose(rank0["weights"], rank1["weights"], atol=1e-6)
    assert rank0["grads"].abs().sum() > 0


def _mkd_worker(rank: int, world_size: int, port: int, result_folder: str):
    """MKD's IAM and discriminators wrapped as the trainer wraps them, updated by the trainer's own
    alignment step (whose adversarial term runs the discriminators outside their DDP wrapper)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    torch.manual_seed(0)
    modules = {"iam": ImageAlignmentModule(architecture(dim=2), 1, MKD_KNOBS),
               "discriminators": DiscriminatorPair(architecture(dim=2), 1, MKD_KNOBS)}
    trainer = SimpleNamespace(
        extra_optimizers={name: torch.optim.Adam(m.parameters(), 1e-3) for name, m in modules.items()},
        extra_modules={name: torch.nn.parallel.DistributedDataParallel(m) for name, m in modules.items()})
    for step in ("generator_forward", "discriminator_step"):
        setattr(trainer, step, MethodType(getattr(nnUNetTrainerMKD, step), trainer))
    weights = {"adversarial": 1.0, "cycle": 10.0, "discriminator": 1.0}
    generator = torch.Generator().manual_seed(100 + rank)
    for _ in range(3):
        assistant = torch.randn(1, 1, 16, 16, generator=generator)
        target = torch.randn(2, 1, 16, 16, generator=generator)
        nnUNetTrainerMKD.alignment_step(trainer, assistant, target, weights)
    state = {name: torch.cat([p.detach().flatten() for p in m.parameters()]) for name, m in modules.items()}
    torch.save(state, os.path.join(result_folder, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_mkd_alignment_modules_under_ddp(tmp_path):
    mp.spawn(_mkd_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for name in ("iam", "discriminators"):  # different data per rank, identical weights: gradients were reduced
        assert torch.allclose(rank0[name], rank1[name], atol=1e-6), name
