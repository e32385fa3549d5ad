"""Trainer names: short variants say their schedule and the no-mirroring choice (``_20x25it_NoMirroring``), the
two are independent mixins, and former names still load (as subclasses that warn)."""

from __future__ import annotations

import importlib
import re

import pytest
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerNoMirroring import (
    nnUNetTrainerNoMirroring,
)

from nnunet_multimodal.environment import ext_trainer_value, trainers_folder
from nnunet_multimodal.training import schedules
from nnunet_multimodal.training.schedules import NoMirroring, Schedule2x5it, Schedule20x25it, Schedule80x25it
from nnunet_multimodal.training.variants import nnUNetTrainerMMPlain_2epochs, nnUNetTrainerMMPlain_2x5it_NoMirroring

SHIMS = sorted(p.stem for p in trainers_folder().glob("nnunet_mm_*.py"))

# former name -> new name; models trained under the former names must keep loading
RENAMED = {f"nnUNetTrainer{old}": f"nnUNetTrainer{new}" for old, new in {
    "MultiModalBase_2epochs": "MultiModalBase_2x5it_NoMirroring",
    "MultiModalBase_demo": "MultiModalBase_20x25it_NoMirroring",
    "MMPlain_2epochs": "MMPlain_2x5it_NoMirroring",
    "MMPlain_demo": "MMPlain_20x25it_NoMirroring",
    "MMPlain_long": "MMPlain_80x25it_NoMirroring",
    "CMSAD_2epochs": "CMSAD_2x5it_NoMirroring",
    "CMSAD_demo": "CMSAD_20x25it_NoMirroring",
    "CMSAD_long": "CMSAD_80x25it_NoMirroring",
    "CMSAD_modalityDropout_2epochs": "CMSAD_modalityDropout_2x5it_NoMirroring",
    "CMSAD_modalityDropout_demo": "CMSAD_modalityDropout_20x25it_NoMirroring",
    "MAML_2epochs": "MAML_2x5it_NoMirroring",
    "MAML_demo": "MAML_20x25it_NoMirroring",
    "MAML_long": "MAML_80x25it_NoMirroring",
    "ModalityDropout_2epochs": "ModalityDropout_2x5it_NoMirroring",
    "ModalityDropout_demo": "ModalityDropout_20x25it_NoMirroring",
    "ModalityDropout_long": "ModalityDropout_80x25it_NoMirroring",
    "MKD_2epochs": "MKD_2x5it_NoMirroring",
    "MKD_demo": "MKD_20x25it_NoMirroring",
    "MKD_T2": "MKD_kdTemperature2",
    "SAMAdapter_2epochs": "SAMAdapter_2x5it_NoMirroring",
    "SAMAdapter_tiny_2epochs": "SAMAdapter_tiny_2x5it_NoMirroring",
    "SAMAdapter_tiny_demo": "SAMAdapter_tiny_20x25it_NoMirroring",
}.items()}


def exported() -> dict[str, type]:
    """Every class the trainer shims export, by name."""
    classes = {}
    for shim in SHIMS:
        module = importlib.import_module(f"nnunet_multimodal.trainers.{shim}")
        classes.update({name: getattr(module, name) for name in module.__all__})
    return classes


def tiny_plans() -> dict:
    """Just what nnUNetTrainer's constructor and its augmentation settings read (no data, no network)."""
    return {"dataset_name": "Dataset999_TrainerNames", "plans_name": "nnUNetPlans", "continue_training": False,
            "configurations": {"2d": {"data_identifier": "nnUNetPlans_2d", "patch_size": [32, 32],
                                      "architecture": {}}}}


DATASET_JSON = {"labels": {"background": 0, "structure": 1}, "channel_names": {"0": "T1", "1": "T2"}}


@pytest.fixture
def results_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_results", str(tmp_path))  # nnU-Net's constructor creates the output folder
    return tmp_path


def make(cls):
    return cls(tiny_plans(), "2d", 0, DATASET_JSON, torch.device("cpu"))


def mirror_axes(trainer) -> tuple:
    """(augmentation mirror axes, inference mirror axes)."""
    *_, augmentation = trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    return augmentation, trainer.inference_allowed_mirroring_axes


def test_names_say_the_schedule_and_the_mirroring():
    classes = exported()
    assert set(RENAMED) | set(RENAMED.values()) <= set(classes)
    assert {name for name, cls in classes.items() if "renamed_to" in vars(cls)} == set(RENAMED)
    for name, cls in classes.items():
        assert "__" not in name, f"{name}: nnU-Net splits result folders on '__'"
        schedule = re.search(r"_(\d+)x(\d+)it(_NoMirroring)?$", name)
        if name in RENAMED:
            assert cls.__name__ == name
            assert cls.renamed_to == RENAMED[name]
            assert cls.__bases__ == (classes[RENAMED[name]],)
        elif schedule:
            assert (cls.schedule_epochs, cls.schedule_iterations) == (int(schedule[1]), int(schedule[2])), name
            assert issubclass(cls, NoMirroring) == bool(schedule[3]), name
        else:
            assert not issubclass(cls, (schedules.ScheduleMixin, NoMirroring)), f"{name} hides a schedule"


def test_former_names_resolve_through_nnunet_to_subclasses_of_the_new(monkeypatch):
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    monkeypatch.setenv("nnUNet_extTrainer", ext_trainer_value())
    for old, new in RENAMED.items():
        found = recursive_find_trainer_class_by_name(old)
        assert found.__name__ == old, old
        assert issubclass(found, exported()[new]), old


@pytest.mark.parametrize("old", sorted(RENAMED))
def test_former_names_warn_when_instantiated(old, monkeypatch):
    """The alias's own constructor warns, then hands every argument to the new class's (stubbed here: the real
    ones need a planned dataset)."""
    classes = exported()
    received = []
    monkeypatch.setattr(classes[RENAMED[old]], "__init__", lambda self, *args: received.append(args))
    args = (tiny_plans(), "2d", 0, DATASET_JSON, torch.device("cpu"))
    with pytest.warns(FutureWarning, match=f"{old} is renamed {RENAMED[old]}"):
        classes[old](*args)
    assert received == [args]


def test_a_former_name_builds_the_new_trainer(results_folder):
    with pytest.warns(FutureWarning, match="renamed nnUNetTrainerMMPlain_2x5it_NoMirroring"):
        trainer = make(nnUNetTrainerMMPlain_2epochs)
    assert isinstance(trainer, nnUNetTrainerMMPlain_2x5it_NoMirroring)
    assert (trainer.num_epochs, trainer.num_iterations_per_epoch, trainer.num_val_iterations_per_epoch) == (2, 5, 2)
    assert mirror_axes(trainer) == (None, None)
    # nnU-Net records the constructor's arguments by name (checkpoint "init_args")
    assert set(trainer.my_init_kwargs) == {"plans", "configuration", "fold", "dataset_json", "device"}
    assert (results_folder / "Dataset999_TrainerNames" / "nnUNetTrainerMMPlain_2epochs__nnUNetPlans__2d").is_dir()


@pytest.mark.parametrize("schedule, numbers", [(Schedule2x5it, (2, 5, 2)), (Schedule20x25it, (20, 25, 5)),
                                               (Schedule80x25it, (80, 25, 5))])
def test_a_schedule_alone_keeps_mirroring(schedule, numbers, results_folder):
    trainer = make(type("nnUNetTrainerScheduleOnly", (schedule, nnUNetTrainer), {}))
    assert (trainer.num_epochs, trainer.num_iterations_per_epoch, trainer.num_val_iterations_per_epoch) == numbers
    assert trainer.save_every == 1
    assert mirror_axes(trainer) == ((0, 1), (0, 1))


def test_no_mirroring_alone_keeps_the_schedule_and_does_what_nnunet_does(results_folder):
    trainer = make(type("nnUNetTrainerMirrorOnly", (NoMirroring, nnUNetTrainer), {}))
    reference = make(nnUNetTrainerNoMirroring)
    assert (trainer.num_epochs, trainer.num_iterations_per_epoch, trainer.save_every) == \
           (reference.num_epochs, reference.num_iterations_per_epoch, reference.save_every) == (1000, 250, 50)
    assert mirror_axes(trainer) == mirror_axes(reference) == (None, None)


def test_the_former_mixin_names_warn_and_combine_both():
    with pytest.warns(FutureWarning, match="Schedule20x25it and NoMirroring"):
        demo_schedule = schedules.DemoSchedule
    assert issubclass(demo_schedule, Schedule20x25it)
    assert issubclass(demo_schedule, NoMirroring)
    with pytest.raises(AttributeError):
        schedules.ShortSchedule  # noqa: B018
