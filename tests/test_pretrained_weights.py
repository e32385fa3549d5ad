"""nnU-Net's ``-pretrained_weights`` between datasets with different label sets: every weight but the output
convolutions (keys containing ``.seg_layers.``) is transferred, as for nnU-Net's own networks."""

import pytest
import torch
from arch_helpers import architecture
from nnunetv2.run.load_pretrained_weights import load_pretrained_weights

from nnunet_multimodal.networks.cmsad import CMSADNet
from nnunet_multimodal.networks.maml import MAMLNet
from nnunet_multimodal.networks.sam_adapter import SAMAdapterNet

NETWORKS = {
    "CMSAD": lambda classes: CMSADNet(architecture(dim=2), 3, 0, classes, (16, 16), True, {"attention_max_tokens": 16}),
    "MAML": lambda classes: MAMLNet(architecture(dim=2), 3, 0, classes, True, {}),
    "SAM adapter": lambda classes: SAMAdapterNet(3, classes, {"variant": "tiny", "input_size": 64,
                                                              "decoder_channels": [16, 8]}),
}


@pytest.mark.parametrize("name", NETWORKS)
def test_pretrained_weights_from_a_dataset_with_other_labels(name, tmp_path):
    pretrained, target = NETWORKS[name](5), NETWORKS[name](3)
    torch.save({"network_weights": pretrained.state_dict()}, tmp_path / "checkpoint_final.pth")
    load_pretrained_weights(target, str(tmp_path / "checkpoint_final.pth"))
    source = pretrained.state_dict()
    for key, value in target.state_dict().items():
        if ".seg_layers." not in key:
            assert torch.equal(value, source[key]), key
    assert any(".seg_layers." in key and source[key].shape != value.shape
               for key, value in target.state_dict().items())


@pytest.mark.parametrize("name", ["MAML", "SAM adapter"])
def test_checkpoints_with_the_earlier_head_keys_still_load(name):
    network, renamed = NETWORKS[name](3), NETWORKS[name](3)
    earlier = {key.replace("head.seg_layers.", "head."): value for key, value in network.state_dict().items()}
    assert earlier.keys() != network.state_dict().keys()
    renamed.load_state_dict(earlier)
    for key, value in network.state_dict().items():
        assert torch.equal(value, renamed.state_dict()[key]), key
