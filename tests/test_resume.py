"""A training run killed with SIGKILL resumes with --c from its last checkpoint and completes."""

import random
import signal
import subprocess
import time

import pytest
import torch
from helpers import BIN, CMSAD_TRAINER, DATASET_ID, MKD_PLANS, MKD_TRAINER, TINY_PLANS, run_tool


# Checkpoints are written and loaded by the one base-trainer path (training/checkpointing.py) for every method:
# CMSAD stands for the single-network trainers (MAML and the SAM adapter differ from it only in their network and
# loss terms), MKD for the trainer with extra modules and optimizers and a second data loader.
@pytest.mark.parametrize("trainer, plans, extra_term", [(CMSAD_TRAINER, TINY_PLANS, "distill"),
                                                        (MKD_TRAINER, MKD_PLANS, "cycle")])
def test_sigkill_then_resume(workspace, phantom_dataset, request, trainer, plans, extra_term):
    if plans == MKD_PLANS:
        request.getfixturevalue("mkd_assistant")
    fold = workspace.results / phantom_dataset.name / f"{trainer}__{plans}__2d" / "fold_3"
    command = [str(BIN / "nnUNetv2_train"), str(DATASET_ID), "2d", "3", "-tr", trainer, "-p", plans,
               "-device", "cpu"]
    process = subprocess.Popen(command, env=workspace.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (fold / "checkpoint_latest.pth").exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(random.uniform(0, 0.3))  # somewhere in the next epoch
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (fold / "checkpoint_final.pth").exists(), "the run finished before it was killed"
    latest = torch.load(fold / "checkpoint_latest.pth", weights_only=False)
    assert latest["current_epoch"] == 1

    run_tool(command + ["--c"], workspace.env)
    final = torch.load(fold / "checkpoint_final.pth", weights_only=False)
    assert final["current_epoch"] == 2
    logs = final["logging"]
    assert len(logs["train_losses"]) == 2
    if extra_term:
        assert len(logs[f"loss_{extra_term}"]) == len(logs[f"weight_{extra_term}"]) == 2
    assert not list(fold.glob(".*.partial*"))
    if trainer == MKD_TRAINER:  # generators, discriminators and their optimizers came back too
        assert set(final["extra_modules"]) == set(final["extra_optimizers"]) == {"iam", "discriminators"}
