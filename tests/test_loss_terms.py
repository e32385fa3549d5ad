import pytest

from nnunet_multimodal.training.loss_terms import LossTerm


def test_constant_weight_from_epoch_zero():
    term = LossTerm("distill", weight=0.1)
    assert [term.weight_at(e, 10) for e in range(3)] == [0.1, 0.1, 0.1]


def test_switch_on_after_start_fraction():
    term = LossTerm("distill", weight=0.5, start=0.3)
    assert [term.weight_at(e, 10) for e in (0, 2, 3, 9)] == [0.0, 0.0, 0.5, 0.5]


def test_linear_ramp_after_start():
    term = LossTerm("kl", weight=1.0, start=0.2, ramp=0.4)  # on at epoch 2, full weight from epoch 5
    weights = [term.weight_at(e, 10) for e in range(8)]
    assert weights[:2] == [0.0, 0.0]
    assert weights[2:6] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert weights[6:] == [1.0, 1.0]


@pytest.mark.parametrize("kwargs", [
    {"name": "not an identifier", "weight": 1.0},
    {"name": "x", "weight": -0.1},
    {"name": "x", "weight": 1.0, "start": 1.5},
    {"name": "x", "weight": 1.0, "ramp": -0.2},
])
def test_invalid_options_rejected(kwargs):
    with pytest.raises(ValueError):
        LossTerm(**kwargs)
