"""The shared base trainer, in process on the session's preprocessed phantom."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_PLANS
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from torch import nn

from nnunet_multimodal.training import checkpointing
from nnunet_multimodal.training.base import nnUNetTrainerMultiModalBase
from nnunet_multimodal.training.checkpointing import PLUGIN_KEY, CheckpointError
from nnunet_multimodal.training.cmsad import nnUNetTrainerCMSAD, nnUNetTrainerCMSAD_modalityDropout
from nnunet_multimodal.training.knobs import read_knobs
from nnunet_multimodal.training.loss_terms import LossTerm
from nnunet_multimodal.training.maml import nnUNetTrainerMAML


class AuxOutputNet(nn.Module):
    """The plans' network, returning an auxiliary output in training and recording the availability mask."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.seen_available = []

    def set_deep_supervision(self, enabled: bool):
        self.inner.decoder.deep_supervision = enabled

    def forward(self, x, available=None):
        self.seen_available.append(None if available is None else available.clone())
        logits = self.inner(x)
        if not self.training:
            return logits
        first = logits[0] if isinstance(logits, (list, tuple)) else logits
        return {"logits": logits, "energy": first.float().pow(2).mean()}


class AuxTrainer(nnUNetTrainerMultiModalBase):
    extra_loss_terms = (LossTerm("energy", weight=0.5, start=0.34),)

    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 3
        self.num_iterations_per_epoch = 2
        self.num_val_iterations_per_epoch = 1

    @classmethod
    def build_multimodal_network(cls, configuration_manager, num_modalities, num_extra_channels,
                                 num_output_channels, enable_deep_supervision, knobs):
        inner = super().build_multimodal_network(configuration_manager, num_modalities, num_extra_channels,
                                                 num_output_channels, enable_deep_supervision, knobs)
        return AuxOutputNet(inner)

    def initialize(self):
        super().initialize()
        self.extra_modules["critic"] = nn.Linear(4, 2)
        self.extra_optimizers["critic"] = torch.optim.Adam(self.extra_modules["critic"].parameters(), 1e-3)

    def compute_extra_losses(self, output, target, available):
        return {"energy": output["energy"]}


class DropoutAuxTrainer(AuxTrainer):
    modality_dropout_p = 0.5


def make_trainer(cls, preprocessed_folder: Path, fold=0, dataset_json=None, plans_name: str = TINY_PLANS):
    plans = json.loads((preprocessed_folder / f"{plans_name}.json").read_text())
    plans["continue_training"] = False
    dataset_json = dataset_json or json.loads((preprocessed_folder / "dataset.json").read_text())
    return cls(plans, "2d", fold, dataset_json, device=torch.device("cpu"))


@pytest.fixture(scope="module")
def trained_aux(preprocessed_folder, workspace):
    with pytest.MonkeyPatch.context() as mp:
        for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
            mp.setenv(name, workspace.env[name])
        mp.setenv("nnUNet_n_proc_DA", "0")
        trainer = make_trainer(AuxTrainer, preprocessed_folder)
        trainer.run_training()
        yield trainer


def test_extra_loss_terms_logged_every_epoch_from_epoch_zero(trained_aux):
    logs = trained_aux.logger.local_logger.my_fantastic_logging
    assert logs["weight_energy"] == [0.0, 0.0, 0.5]
    assert logs["loss_energy"][:2] == [0.0, 0.0]  # switched off: not computed, logged as 0
    assert logs["loss_energy"][2] > 0
    assert len(logs["loss_seg"]) == len(logs["train_losses"]) == 3
    assert (Path(trained_aux.output_folder) / "progress_loss_terms.png").is_file()
    assert (Path(trained_aux.output_folder) / "progress.png").is_file()


def test_train_step_adds_weighted_extra_terms(trained_aux, nnunet_paths):
    trained_aux.network.train()
    result = trained_aux.train_step(next(trained_aux.dataloader_train))
    assert float(result["loss"]) == pytest.approx(float(result["loss_seg"]) + 0.5 * float(result["loss_energy"]),
                                                  rel=1e-5)


def test_inference_returns_one_tensor_and_deep_supervision_toggles(trained_aux):
    network = trained_aux.network
    network.eval()
    x = torch.randn(1, 3, *trained_aux.configuration_manager.patch_size)
    trained_aux.set_deep_supervision_enabled(False)
    with torch.no_grad():
        out = network(x)
    assert isinstance(out, torch.Tensor)
    assert out.shape == (1, 4, *x.shape[2:])
    trained_aux.set_deep_supervision_enabled(True)
    with torch.no_grad():
        assert isinstance(network(x), (list, tuple))


def test_final_checkpoint_carries_stamp_knobs_and_extra_state(trained_aux):
    checkpoint = torch.load(Path(trained_aux.output_folder) / "checkpoint_final.pth", weights_only=False)
    stamp = checkpoint[PLUGIN_KEY]
    assert stamp["format"] == checkpoint["nnunet_multimodal"]["format"] == checkpointing.CHECKPOINT_FORMAT
    assert stamp["knobs"]["extra_loss_terms"][0]["name"] == "energy"
    assert stamp["knobs"]["modalities"] == ["T1", "T2", "FLAIR"]
    assert set(checkpoint["extra_modules"]) == {"critic"}
    assert set(checkpoint["extra_optimizers"]) == {"critic"}
    assert not any(k.startswith("critic") for k in checkpoint["network_weights"])


def test_checkpoint_round_trip_restores_extra_modules_and_optimizers(trained_aux, preprocessed_folder,
                                                                     nnunet_paths, tmp_path):
    critic = trained_aux.extra_modules["critic"]
    critic(torch.randn(3, 4)).sum().backward()
    trained_aux.extra_optimizers["critic"].step()
    path = tmp_path / "checkpoint.pth"
    trained_aux.save_checkpoint(str(path))

    for source in (str(path), torch.load(path, weights_only=False)):  # a file name and a dict both work
        restored = make_trainer(AuxTrainer, preprocessed_folder)
        restored.load_checkpoint(source)
        assert restored.current_epoch == trained_aux.current_epoch + 1
        for key, value in trained_aux.network.state_dict().items():
            assert torch.equal(value, restored.network.state_dict()[key])
        assert torch.equal(restored.extra_modules["critic"].weight, critic.weight)
        state = restored.extra_optimizers["critic"].state_dict()["state"]
        assert int(state[0]["step"]) == int(trained_aux.extra_optimizers["critic"].state_dict()["state"][0]["step"])
        assert restored.logger.local_logger.my_fantastic_logging["weight_energy"] == [0.0, 0.0, 0.5]


def test_our_checkpoints_hold_every_key_nnunets_own_save_writes(trained_aux, tmp_path):
    # the installed nnU-Net's save_checkpoint on the same trainer: an nnU-Net update adding a key fails here
    nnunets = tmp_path / "nnunet.pth"
    nnUNetTrainer.save_checkpoint(trained_aux, str(nnunets))
    assert set(torch.load(nnunets, weights_only=False)) <= set(trained_aux.checkpoint_payload())


def test_kill_during_save_leaves_previous_checkpoint_intact(trained_aux, monkeypatch, tmp_path):
    path = tmp_path / "checkpoint_latest.pth"
    trained_aux.save_checkpoint(str(path))
    before = path.read_bytes()

    def dies_half_way(obj, f):
        Path(f).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpointing.torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        trained_aux.save_checkpoint(str(path))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_latest.pth"]


def test_temporary_files_of_a_killed_save_are_removed_by_the_next_save(tmp_path):
    stale = tmp_path / ".checkpoint_latest.pth.6f3a09c1.partial.pth"    # what SIGKILL during torch.save leaves
    stale.write_bytes(b"half a checkpoint")
    checkpointing.atomic_torch_save({"network_weights": {}}, tmp_path / "checkpoint_latest.pth")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_latest.pth"]


def test_checkpoints_get_the_permissions_of_any_file_the_user_writes(tmp_path):
    written_plainly = tmp_path / "plain"
    written_plainly.write_bytes(b"")
    checkpointing.atomic_torch_save({"network_weights": {}}, tmp_path / "checkpoint_final.pth")
    assert (tmp_path / "checkpoint_final.pth").stat().st_mode == written_plainly.stat().st_mode


def test_unusable_checkpoints_give_clear_errors(trained_aux, tmp_path):
    good = tmp_path / "good.pth"
    trained_aux.save_checkpoint(str(good))
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(CheckpointError, match="truncated.pth is unreadable.*retrain"):
        trained_aux.load_checkpoint(str(truncated))
    with pytest.raises(CheckpointError, match="does not exist"):
        trained_aux.load_checkpoint(str(tmp_path / "absent.pth"))

    checkpoint = torch.load(good, weights_only=False)
    plain = {k: v for k, v in checkpoint.items() if k != PLUGIN_KEY}
    with pytest.raises(CheckpointError, match="-pretrained_weights"):
        trained_aux.load_checkpoint(plain)
    with pytest.raises(CheckpointError, match="written by trainer 'nnUNetTrainer'"):
        trained_aux.load_checkpoint(dict(checkpoint, trainer_name="nnUNetTrainer"))
    future = dict(checkpoint, **{PLUGIN_KEY: dict(checkpoint[PLUGIN_KEY], format=99, version="9.0")})
    with pytest.raises(CheckpointError, match="nnunet-multimodal==9.0"):
        trained_aux.load_checkpoint(future)


def with_knobs(checkpoint: dict, **changes) -> dict:
    stamp = checkpoint[PLUGIN_KEY]
    return dict(checkpoint, **{PLUGIN_KEY: dict(stamp, knobs=dict(stamp["knobs"], **changes))})


def test_resuming_with_other_modalities_or_architecture_knobs_is_refused(trained_aux, tmp_path):
    checkpoint = trained_aux.checkpoint_payload()
    with pytest.raises(CheckpointError, match=r"modalities: \['A', 'B', 'C'\] in the checkpoint, \['T1', 'T2', "
                                              r"'FLAIR'\] now"):
        trained_aux.load_checkpoint(with_knobs(checkpoint, modalities=["A", "B", "C"]))
    with pytest.raises(CheckpointError, match=r"architecture: \{'branch_width': 0.75\} in the checkpoint.*plans"):
        trained_aux.load_checkpoint(with_knobs(checkpoint, architecture={"branch_width": 0.75}))
    trained_aux.load_checkpoint(with_knobs(checkpoint, plugin_version="0.0.1", modality_dropout_p=0.5))
    resumed = [line.strip() for line in Path(trained_aux.log_file).read_text().split("resuming with")[1:]]
    assert resumed == ["modality_dropout_p = 0.0 (the checkpoint was trained with 0.5)"]


def test_modality_dropout_masks_reach_network(preprocessed_folder, nnunet_paths):
    trainer = make_trainer(DropoutAuxTrainer, preprocessed_folder)
    trainer.initialize()
    trainer.dataloader_train, trainer.dataloader_val = trainer.get_dataloaders()
    trainer.network.train()
    for _ in range(3):
        trainer.train_step(next(trainer.dataloader_train))
    masks = [m for m in trainer.network.seen_available if m is not None]
    assert len(masks) == 3
    for mask in masks:
        assert mask.shape == (trainer.batch_size, 3)
        assert mask.any(dim=1).all()
    assert any(not m.all() for m in masks)


def test_cmsad_under_modality_dropout_trains_every_parameter(preprocessed_folder, nnunet_paths):
    trainer = make_trainer(nnUNetTrainerCMSAD_modalityDropout, preprocessed_folder)
    trainer.initialize()
    trainer.current_epoch = trainer.num_epochs - 1  # distillation at its full weight
    trainer.dataloader_train, trainer.dataloader_val = trainer.get_dataloaders()
    masks = []
    trainer.network.register_forward_pre_hook(lambda module, args, kwargs: masks.append(kwargs.get("available")),
                                              with_kwargs=True)
    torch.manual_seed(0)
    for _ in range(4):
        result = trainer.train_step(next(trainer.dataloader_train))
        assert np.isfinite(result["loss"])
        assert result["loss_distill"] > 0
        # every parameter gets a gradient, dropped branches included (DDP needs it), except the lowest-resolution
        # segmentation layer: nnU-Net weights that output 0 outside DDP (1e-6 under DDP)
        unused = {n for n, p in trainer.network.named_parameters() if p.grad is None}
        assert unused <= {"decoder.seg_layers.0.weight", "decoder.seg_layers.0.bias"}
    assert all(m is not None and m.any(dim=1).all() for m in masks)
    assert any(not m.all() for m in masks)


def test_single_channel_dataset_rejected_before_anything_is_written(preprocessed_folder, nnunet_paths):
    class TwoBranchTrainer(nnUNetTrainerMultiModalBase):
        min_modalities = 2

    dataset_json = json.loads((preprocessed_folder / "dataset.json").read_text())
    dataset_json["channel_names"] = {"0": "CT"}
    with pytest.raises(ValueError, match="needs at least 2 modalities.*1 \\(CT\\).*plain nnUNetTrainer"):
        make_trainer(TwoBranchTrainer, preprocessed_folder, dataset_json=dataset_json)
    assert not list(nnunet_paths.results.rglob("TwoBranchTrainer*"))


def test_knob_value_the_network_cannot_take_rejected_before_anything_is_written(preprocessed_folder, nnunet_paths):
    class BadKnobMAML(nnUNetTrainerMAML):
        pass

    plans = json.loads((preprocessed_folder / f"{TINY_PLANS}.json").read_text())
    plans["configurations"]["2d"]["multimodal"] = {"maml": {"branch_width": 5}}
    dataset_json = json.loads((preprocessed_folder / "dataset.json").read_text())
    with pytest.raises(ValueError, match="branch_width must be 'auto' or a number in \\(0, 1\\], got 5"):
        BadKnobMAML(plans, "2d", 0, dataset_json, device=torch.device("cpu"))
    assert not list(nnunet_paths.results.rglob("BadKnobMAML*"))


def test_distillation_stages_beyond_the_plans_rejected_before_anything_is_written(preprocessed_folder, nnunet_paths):
    class DeepDistillCMSAD(nnUNetTrainerCMSAD):
        distill_stages = (-9, -1)

    plans = json.loads((preprocessed_folder / f"{TINY_PLANS}.json").read_text())
    dataset_json = json.loads((preprocessed_folder / "dataset.json").read_text())
    with pytest.raises(ValueError, match=r"DeepDistillCMSAD.distill_stages: .*\(-9, -1\).*in \[-4, 4\)"):
        DeepDistillCMSAD(plans, "2d", 0, dataset_json, device=torch.device("cpu"))
    assert not list(nnunet_paths.results.rglob("DeepDistillCMSAD*"))


def test_knobs_merge_defaults_and_reject_unknown_names():
    defaults = {"width": 0.5, "levels": [2, 3]}
    configuration = {"multimodal": {"cmsad": {"width": 0.25}, "maml": {"anything": 1}}}
    assert read_knobs(configuration, "cmsad", defaults) == {"width": 0.25, "levels": [2, 3]}
    assert read_knobs({}, "cmsad", defaults) == defaults
    with pytest.raises(ValueError, match="Unknown knob.*widht"):
        read_knobs({"multimodal": {"cmsad": {"widht": 1}}}, "cmsad", defaults)


def test_loss_arrays_are_finite(trained_aux):
    logs = trained_aux.logger.local_logger.my_fantastic_logging
    assert np.all(np.isfinite(logs["loss_seg"]))
