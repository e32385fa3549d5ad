"""The work counter behind the FLOP column and the GPU floor (nnunet_multimodal/benchmarks/work.py), on tensors small
enough to count by hand."""

import pytest
import torch

from nnunet_multimodal.benchmarks.work import Ceilings, WorkCounter

FLOAT32 = 4


def _work(run, ceilings=None):
    counter = WorkCounter(ceilings)
    with counter:
        run()
    return counter.work


def test_grouped_convolution_does_a_groups_th_of_the_dense_work():
    x = torch.zeros(1, 4, 5, 5)
    grouped = torch.nn.Conv2d(4, 4, 3, padding=1, groups=2, bias=False)
    # 4 outputs x (4 / 2) inputs x 3 x 3 weights, one multiply and one add each, at 5 x 5 pixels
    assert _work(lambda: grouped(x)).flops == 2 * 4 * 2 * 9 * 25


def test_backward_of_a_convolution_computes_input_and_weight_gradients_at_the_forward_cost_each():
    x = torch.zeros(1, 2, 4, 4, requires_grad=True)
    convolution = torch.nn.Conv2d(2, 3, 3, padding=1, bias=False)
    output = convolution(x)
    forward = 2 * 3 * 2 * 9 * 16
    assert _work(lambda: output.sum().backward()).flops == 2 * forward


def test_backward_without_an_input_gradient_computes_the_weight_gradient_alone():
    x = torch.zeros(1, 2, 4, 4)
    convolution = torch.nn.Conv2d(2, 3, 3, padding=1, bias=False)
    output = convolution(x)
    assert _work(lambda: output.sum().backward()).flops == 2 * 3 * 2 * 9 * 16


def test_transposed_convolution_meets_each_input_element_with_its_output_channels_kernel():
    x = torch.zeros(1, 2, 3, 3)
    upsample = torch.nn.ConvTranspose2d(2, 4, 2, stride=2, bias=False)
    # each of 2 x 3 x 3 inputs meets 4 output channels x 2 x 2 weights
    assert _work(lambda: upsample(x)).flops == 2 * 18 * 4 * 4


def test_an_elementwise_operation_reads_its_input_and_writes_its_output():
    x = torch.zeros(2, 3)
    assert _work(lambda: torch.relu(x)).bytes == 2 * 6 * FLOAT32


def test_views_launch_nothing():
    x = torch.zeros(2, 3)
    assert _work(lambda: x.view(3, 2).transpose(0, 1)).operations == 0


def test_floor_takes_the_slower_of_arithmetic_and_memory_per_operation():
    x = torch.zeros(1, 1, 2, 2)
    convolution = torch.nn.Conv2d(1, 1, 1, bias=False)   # 8 FLOP (2 s); reads 16 + 4 bytes, writes 16 (4 s)
    ceilings = Ceilings(flops_per_second=4.0, bytes_per_second=9.0)
    assert _work(lambda: convolution(x), ceilings).floor_seconds == pytest.approx(36 / 9.0)


def test_the_meta_device_is_counted_like_the_cpu():
    on_cpu, on_meta = torch.nn.Conv3d(2, 4, 3, padding=1), torch.nn.Conv3d(2, 4, 3, padding=1, device="meta")
    x_cpu, x_meta = torch.zeros(1, 2, 4, 4, 4), torch.zeros(1, 2, 4, 4, 4, device="meta")
    on_cpu, on_meta = _work(lambda: on_cpu(x_cpu)), _work(lambda: on_meta(x_meta))
    assert (on_meta.flops, on_meta.bytes) == (on_cpu.flops, on_cpu.bytes)


def test_a_reshape_that_copies_counts_the_copy_once():
    x = torch.zeros(2, 3).t()   # not contiguous: reshape clones, then views the clone without a schema view mark
    work = _work(lambda: x.reshape(6))
    assert (work.operations, work.bytes) == (1, 2 * 6 * FLOAT32)
