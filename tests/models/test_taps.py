from __future__ import annotations

import pytest
import torch

from audiointerp.models import build

VGGISH_TINY = {"widths": [4, 8, 8, 16], "embedding_dim": 16}
BEATS_TINY = {"embed_dim": 32, "dim": 48, "ffn": 64, "heads": 4, "layers": 3, "conv_pos": 16, "conv_groups": 4}


@pytest.mark.parametrize(
    "name,num_classes,params,features,output",
    [
        ("small_cnn", 7, {"widths": [4, 8, 8, 16]}, (2, 1, 64, 101), "logits"),
        ("semdnn", 7, VGGISH_TINY, (2, 1, 96, 64), "output"),
        ("catdnn", 7, VGGISH_TINY, (2, 1, 96, 64), "output"),
        ("cae", None, VGGISH_TINY, (2, 1, 96, 64), "reconstruction"),
        ("mn04", 7, {}, (2, 1, 128, 40), "logits"),
        ("yamnet", 521, {}, (2, 1, 96, 64), "logits"),
        ("beats", 5, BEATS_TINY, (2, 1, 64, 128), "logits"),
        ("beats", None, BEATS_TINY, (2, 1, 64, 128), "features"),
    ],
)
def test_forward_from_forward_until_equals_forward_for_every_layer(
    name: str, num_classes: int | None, params: dict, features: tuple, output: str
) -> None:
    torch.manual_seed(0)
    net = build(name, num_classes=num_classes, **params).eval()
    x = torch.randn(*features)
    with torch.no_grad():
        full = net(x)
        for layer in net.layer_names():
            activation = net.forward_until(x, layer)
            torch.testing.assert_close(net.forward_from(activation, layer), full, msg=layer)
    assert net.layer_names()[-1] == output


def test_unknown_layer_lists_the_layers() -> None:
    net = build("small_cnn", num_classes=3, widths=[4, 8, 8, 16])
    with pytest.raises(KeyError, match="block1, block2"):
        net.forward_until(torch.randn(1, 1, 64, 20), "block9")
