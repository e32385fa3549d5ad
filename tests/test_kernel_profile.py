"""Profiler summaries of the speed benchmark (nnunet_multimodal/benchmarks/kernel_profile.py), on the CPU."""

from types import SimpleNamespace

import torch

from nnunet_multimodal.benchmarks.kernel_profile import (
    convolution_time_by_grouping,
    profile_passes,
    summarize_profile,
    write_profile,
)

CPU = torch.device("cpu")


def _profile_of(network, passes=2):
    x = torch.randn(1, 4, 6, 6, 6, requires_grad=True)
    return profile_passes(lambda: network(x).sum().backward(), passes, CPU)


def test_grouped_convolutions_are_timed_apart_from_dense_ones():
    summary = summarize_profile(_profile_of(torch.nn.Conv3d(4, 8, 3, groups=4)), 2, CPU)
    assert summary["grouped_convolution_ms_per_pass"] > 0
    assert summary["dense_convolution_ms_per_pass"] == 0


def test_dense_convolutions_are_not_counted_as_grouped():
    summary = summarize_profile(_profile_of(torch.nn.Conv3d(4, 8, 3)), 2, CPU)
    assert summary["grouped_convolution_ms_per_pass"] == 0
    assert summary["dense_convolution_ms_per_pass"] > 0


def test_the_table_file_names_the_pass_and_holds_the_operators(tmp_path):
    write_profile(_profile_of(torch.nn.Conv3d(4, 8, 3)), tmp_path, "net_step", 2, CPU)
    assert "aten::convolution" in (tmp_path / "net_step.txt").read_text()


def test_a_convolution_without_recorded_arguments_is_unclassified_not_an_error():
    event = SimpleNamespace(name="aten::convolution", concrete_inputs=[], cpu_time_total=5.0)
    assert convolution_time_by_grouping([event], CPU)["unclassified_us"] == 5.0
