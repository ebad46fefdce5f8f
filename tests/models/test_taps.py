from __future__ import annotations

import pytest
import torch

from audiointerp.models import build


@pytest.mark.parametrize("name,params,features", [("small_cnn", {"widths": [4, 8, 8, 16]}, (2, 1, 64, 101))])
def test_forward_from_forward_until_equals_forward_for_every_layer(name: str, params: dict, features: tuple) -> None:
    torch.manual_seed(0)
    net = build(name, num_classes=7, **params).eval()
    x = torch.randn(*features)
    with torch.no_grad():
        full = net(x)
        for layer in net.layer_names():
            activation = net.forward_until(x, layer)
            torch.testing.assert_close(net.forward_from(activation, layer), full, msg=layer)
    assert net.layer_names()[-1] == "logits"


def test_unknown_layer_lists_the_layers() -> None:
    net = build("small_cnn", num_classes=3, widths=[4, 8, 8, 16])
    with pytest.raises(KeyError, match="block1, block2"):
        net.forward_until(torch.randn(1, 1, 64, 20), "block9")
