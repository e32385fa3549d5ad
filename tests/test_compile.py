"""torch.compile, which nnU-Net applies to the network on CUDA by default (``nnUNet_compile``): our networks trace as
one graph in training and prediction mode (a graph break would split the compiled step and cost GPU time), and
the compiled network computes what the eager one does."""

import pytest
import torch
from arch_helpers import architecture
from torch._dynamo.testing import CompileCounter

from nnunet_multimodal.networks.cmsad import CMSADNet
from nnunet_multimodal.networks.maml import MAMLNet
from nnunet_multimodal.networks.sam_adapter import SAMAdapterNet

AVAILABLE = torch.tensor([[True, False, True], [True, True, True]])
NETWORKS = {
    # 3D: "auto" runs the branch convolutions split while training and grouped in eval, one graph each
    "CMSAD 3D": (lambda: CMSADNet(architecture(dim=3), 3, 0, 3, (16,) * 3, True, {"attention_max_tokens": 64}),
                 (16,) * 3),
    "CMSAD 2D": (lambda: CMSADNet(architecture(dim=2), 3, 0, 3, (16,) * 2, True, {"attention_max_tokens": 16}),
                 (16,) * 2),
    "MAML 3D": (lambda: MAMLNet(architecture(dim=3), 3, 0, 3, True, {}), (16,) * 3),
    "MAML 2D": (lambda: MAMLNet(architecture(dim=2), 3, 0, 3, True, {}), (16,) * 2),
    "SAM adapter": (lambda: SAMAdapterNet(3, 3, {"variant": "tiny", "input_size": 64, "decoder_channels": [16, 8]}),
                    (32, 32)),
}


@pytest.mark.parametrize("name", NETWORKS)
def test_network_traces_as_one_graph_in_training_and_prediction(name):
    build, patch = NETWORKS[name]
    torch.manual_seed(0)
    net = build()
    x = torch.randn(2, 3, *patch)
    for mode in ("train", "eval"):
        torch._dynamo.reset()
        explained = torch._dynamo.explain(getattr(net, mode)())(x, available=AVAILABLE)
        assert explained.graph_break_count == 0, (mode, [str(r.reason) for r in explained.break_reasons])
        assert explained.graph_count == 1, mode


@pytest.mark.parametrize("name", ["CMSAD 3D", "MAML 3D"])
def test_switching_between_training_and_prediction_compiles_each_mode_once(name):
    build, patch = NETWORKS[name]
    counter = CompileCounter()
    torch._dynamo.reset()
    net = torch.compile(build(), backend=counter)
    x = torch.randn(2, 3, *patch)
    for _ in range(3):  # nnU-Net trains, then validates, every epoch
        net.train()(x, available=AVAILABLE)
        with torch.no_grad():
            net.eval()(x, available=AVAILABLE)
    assert counter.frame_count == 2


def tensors(out):
    if isinstance(out, dict):
        return [t for value in out.values() for t in tensors(value)]
    if isinstance(out, (list, tuple)):
        return [t for value in out for t in tensors(value)]
    return [out] if isinstance(out, torch.Tensor) and out.is_floating_point() else []


@pytest.mark.slow  # inductor compiles each network twice (training, prediction): about a minute each on 2 cores
@pytest.mark.parametrize("name", ["CMSAD 3D", "MAML 3D"])
def test_compiled_network_computes_the_eager_network(name):
    build, patch = NETWORKS[name]
    torch.manual_seed(0)
    net = build()
    compiled = torch.compile(net)
    x = torch.randn(2, 3, *patch)
    results = {}
    for key, model in (("eager", net), ("compiled", compiled)):
        out = tensors(model.train()(x, available=AVAILABLE))
        sum(t.square().mean() for t in out).backward()
        gradients = torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None])
        net.zero_grad(set_to_none=True)
        with torch.no_grad():
            prediction = tensors(model.eval()(x, available=AVAILABLE))
        results[key] = (out, gradients, prediction)
    for eager, compiled_result in zip(results["eager"][0] + results["eager"][2],
                                      results["compiled"][0] + results["compiled"][2], strict=True):
        torch.testing.assert_close(compiled_result, eager, atol=1e-4, rtol=1e-3)
    eager_gradients, compiled_gradients = results["eager"][1], results["compiled"][1]
    torch.testing.assert_close(compiled_gradients, eager_gradients, rtol=0,
                               atol=1e-4 * eager_gradients.abs().max().item())
