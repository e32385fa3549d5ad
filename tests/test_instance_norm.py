import pytest
import torch
from arch_helpers import architecture, assert_same_function, configuration
from torch import nn

from nnunet_multimodal.benchmarks.work import tensors_in
from nnunet_multimodal.networks.cmsad import CMSADNet
from nnunet_multimodal.networks.instance_norm import group_norm_kernel
from nnunet_multimodal.networks.maml import MAMLNet
from nnunet_multimodal.networks.plans_architecture import PlansArchitecture
from nnunet_multimodal.training.cmsad import nnUNetTrainerCMSAD
from nnunet_multimodal.training.maml import nnUNetTrainerMAML


@pytest.mark.parametrize("norm_op, shape", [(nn.InstanceNorm1d, (3, 5, 17)), (nn.InstanceNorm2d, (3, 5, 9, 7)),
                                            (nn.InstanceNorm3d, (2, 4, 5, 6, 3))])
@pytest.mark.parametrize("affine", [True, False])
def test_same_values_and_gradients_as_instance_norm(norm_op, shape, affine):
    torch.manual_seed(0)
    stock = norm_op(shape[1], eps=1e-5, affine=affine)
    if affine:
        with torch.no_grad():
            stock.weight.uniform_(0.5, 1.5)
            stock.bias.uniform_(-1, 1)
    fast = group_norm_kernel(norm_op)(shape[1], eps=1e-5, affine=affine)
    fast.load_state_dict(stock.state_dict())
    x = (torch.randn(*shape) * 3 + 2).double().requires_grad_(True)
    x_fast = x.detach().clone().requires_grad_(True)
    stock.double(), fast.double()
    upstream = torch.randn(*shape, dtype=torch.double)
    (stock(x) * upstream).sum().backward()
    (fast(x_fast) * upstream).sum().backward()
    torch.testing.assert_close(fast(x_fast), stock(x))
    torch.testing.assert_close(x_fast.grad, x.grad)
    if affine:
        torch.testing.assert_close(fast.weight.grad, stock.weight.grad)
        torch.testing.assert_close(fast.bias.grad, stock.bias.grad)


def test_is_an_instance_norm_with_the_same_state_dict():
    fast = group_norm_kernel(nn.InstanceNorm2d)(8, affine=True)
    assert isinstance(fast, nn.InstanceNorm2d)
    assert fast.state_dict().keys() == nn.InstanceNorm2d(8, affine=True).state_dict().keys()
    assert group_norm_kernel(nn.InstanceNorm2d) is type(fast)


def test_other_norms_and_none_pass_through():
    assert group_norm_kernel(nn.BatchNorm2d) is nn.BatchNorm2d
    assert group_norm_kernel(None) is None


def test_running_statistics_and_unbatched_inputs_take_the_stock_path():
    torch.manual_seed(0)
    fast = group_norm_kernel(nn.InstanceNorm2d)(4, affine=True, track_running_stats=True)
    stock = nn.InstanceNorm2d(4, affine=True, track_running_stats=True)
    stock.load_state_dict(fast.state_dict())
    x = torch.randn(2, 4, 6, 6) + 1
    torch.testing.assert_close(fast(x), stock(x))
    torch.testing.assert_close(fast.running_mean, stock.running_mean)   # updated as the stock module does
    fast.eval(), stock.eval()
    torch.testing.assert_close(fast(x), stock(x))
    unbatched = torch.randn(4, 6, 6)
    plain = group_norm_kernel(nn.InstanceNorm2d)(4)
    torch.testing.assert_close(plain(unbatched), nn.InstanceNorm2d(4)(unbatched))


def test_multi_branch_networks_use_it_where_the_plans_say_instance_norm():
    plans = architecture(dim=2)
    assert plans.norm_op is group_norm_kernel(nn.InstanceNorm2d)
    net = CMSADNet(plans, 2, 0, 3, (16, 16))
    norms = [m for m in net.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert norms
    assert all(type(m) is plans.norm_op for m in norms)


def test_the_knob_runs_the_group_norm_kernel_on_every_device_when_asked():
    everywhere = group_norm_kernel(nn.InstanceNorm3d, "group_norm")(4, affine=True, device="meta")
    x = torch.randn(2, 4, 3, 3, 3, device="meta")
    assert everywhere(x)._base is None   # F.group_norm's own tensor, not a view of a batch norm's output


def test_stock_keeps_the_plans_norm():
    assert group_norm_kernel(nn.InstanceNorm3d, "stock") is nn.InstanceNorm3d


def test_an_unknown_instance_norm_kernel_is_refused():
    with pytest.raises(ValueError, match="instance_norm"):
        group_norm_kernel(nn.InstanceNorm3d, "fast")


@pytest.mark.parametrize("network", [CMSADNet, MAMLNet])
def test_group_norm_on_every_device_computes_the_stock_network(network):
    def build(kernel):
        torch.manual_seed(0)
        return network(PlansArchitecture.from_configuration(configuration(dim=3), kernel), 2, 0, 3,
                       **({"patch_size": (16, 16, 16)} if network is CMSADNet else {})).train()

    assert_same_function(build("stock"), build("group_norm"), torch.randn(2, 2, 16, 16, 16), None,
                         lambda out: list(tensors_in(out)))


@pytest.mark.parametrize("trainer", [nnUNetTrainerCMSAD, nnUNetTrainerMAML])
def test_the_trainers_read_the_instance_norm_knob_from_the_plans(trainer):
    knobs = {**trainer.default_knobs, "instance_norm": "group_norm"}
    net = trainer.build_multimodal_network(configuration(dim=3), 2, 0, 3, True, knobs)
    norms = {type(m).__name__ for m in net.modules() if isinstance(m, nn.InstanceNorm3d)}
    assert norms == {"InstanceNorm3dByGroupNormEverywhere"}
