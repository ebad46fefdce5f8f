"""`build(name)` with no `num_classes`: released heads, the checkpoint's own count, or a ConfigError naming it.

Every zoo name builds with no arguments (a pretrained model gets its released head: 527 AudioSet classes for
EfficientAT mn/dymn and PaSST, 521 for YAMNet; semDNN its 300-d output; BEATs and CLAP their features), or
raises a ConfigError that names `num_classes`. A state dict of each pretrained family's released layout loads
strictly with no `num_classes`, and a fine-tuned checkpoint gives its own class count.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Optional

import pytest
import torch

from audiointerp.errors import ConfigError
from audiointerp.models import available_models, build

DATA = Path(__file__).parent / "data"

# the key whose first dimension is the class count, and the released count (None: features, no head)
HEADS: dict[str, tuple[Optional[str], Optional[int]]] = {
    **{f"mn{w}": ("classifier.5.weight", 527) for w in ("01", "02", "04", "05", "10", "20", "30", "40")},
    **{f"dymn{w}": ("classifier.5.weight", 527) for w in ("04", "10", "20")},
    "passt": ("net.head.1.weight", 527),
    "passt_s_swa_p16_128_ap476": ("net.head.1.weight", 527),
    "yamnet": ("classifier.weight", 521),
    "semdnn": ("head.weight", 300),
    "beats": ("predictor.weight", None),
    "clap": ("classifier.weight", None),
    "cae": (None, None),
    "autoencoder1d-at-v1": (None, None),
    "autoencoder1d-at-v1-encoder": (None, None),
}
NEEDS_CLASSES = {"small_cnn", "catdnn"}  # no released head: the caller says how many classes


def released(keys: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    """A state dict of the given layout (random values; BatchNorm counters as integers; BEATs' one position-bias
    table, listed under every layer, the same under each as in the released files)."""
    generator = torch.Generator().manual_seed(0)
    state = {k: torch.tensor(3) if k.endswith("num_batches_tracked") else torch.randn(shape, generator=generator) * 0.01
             for k, shape in keys.items()}
    shared = [k for k in state if k.endswith("relative_attention_bias.weight")]
    return {k: state[shared[0]] if k in shared else v for k, v in state.items()}


def strict_build(name: str, checkpoint: Path | dict[str, torch.Tensor]) -> torch.nn.Module:
    """`build(name, checkpoint=...)` with no num_classes; any warning (a head left unloaded) fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return build(name, checkpoint=checkpoint)


def assert_loaded(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    own = model.state_dict()
    assert set(own) == set(state)
    assert all(torch.equal(own[k].cpu(), v.to(own[k].dtype)) for k, v in state.items())


def test_every_zoo_name_builds_with_no_arguments_or_names_the_argument() -> None:
    names = available_models()
    assert set(names) == set(HEADS) | NEEDS_CLASSES, "a new zoo model: add its released head here"
    start = time.perf_counter()
    for name in names:
        if name in NEEDS_CLASSES:
            with pytest.raises(ConfigError, match=rf"model '{name}' needs num_classes"):
                build(name)
            continue
        if name == "clap":
            pytest.importorskip("transformers")
        model = build(name)
        key, count = HEADS[name]
        state = model.state_dict()
        if count is None:
            assert key is None or key not in state, name  # features only: no head
        else:
            assert state[key].shape[0] == count, name
    assert time.perf_counter() - start < 60


def test_mn_released_layout_loads_strictly_without_num_classes(tmp_path: Path) -> None:
    state = released(json.loads((DATA / "efficientat_mn_keys.json").read_text())["models"]["mn10"])
    torch.save(state, tmp_path / "mn10_as_mAP_471.pt")
    model = strict_build("mn10", tmp_path / "mn10_as_mAP_471.pt")
    assert model.classifier[5].out_features == 527
    assert_loaded(model, state)


def test_dymn_released_layout_loads_strictly_without_num_classes(tmp_path: Path) -> None:
    state = released(json.loads((DATA / "dymn10_keys.json").read_text())["keys"])
    torch.save({"state_dict": state}, tmp_path / "dymn10_as.pt")
    model = strict_build("dymn10", tmp_path / "dymn10_as.pt")
    assert model.classifier[5].out_features == 527
    assert_loaded(model, state)


def test_passt_released_layout_loads_strictly_without_num_classes() -> None:
    keys = json.loads((DATA / "passt_keys.json").read_text())["keys"]  # hear21passt's own layout, no `net.` prefix
    state = released(keys)
    model = strict_build("passt", state)
    assert model.net.head[1].out_features == 527 and model.net.head_dist.out_features == 527
    assert_loaded(model, {f"net.{k}": v for k, v in state.items()})


def test_yamnet_released_layout_loads_strictly_without_num_classes(tmp_path: Path) -> None:
    from tests.models.test_yamnet import port_state_dict

    state = port_state_dict()
    torch.save(state, tmp_path / "yamnet.pth")
    model = strict_build("yamnet", tmp_path / "yamnet.pth")
    assert model.classifier.out_features == 521
    assert_loaded(model, state)


def test_beats_released_layouts_load_strictly_without_num_classes(tmp_path: Path) -> None:
    keys = json.loads((DATA / "beats_keys.json").read_text())
    pretrained = released(keys["pretrained"])
    torch.save({"cfg": {"finetuned_model": False}, "model": pretrained}, tmp_path / "BEATs_iter3_plus_AS2M.pt")
    features = strict_build("beats", tmp_path / "BEATs_iter3_plus_AS2M.pt")
    assert features.predictor is None
    assert_loaded(features, pretrained)
    finetuned = released({**keys["pretrained"], **keys["finetuned_extra"]})
    torch.save({"cfg": {"finetuned_model": True}, "model": finetuned}, tmp_path / "BEATs_iter3_plus_AS2M_finetuned.pt")
    tagger = strict_build("beats", tmp_path / "BEATs_iter3_plus_AS2M_finetuned.pt")
    assert tagger.predictor.out_features == 527
    assert_loaded(tagger, finetuned)


def test_a_fine_tuned_checkpoint_gives_its_own_class_count(tmp_path: Path) -> None:
    torch.manual_seed(0)
    tuned = build("mn04", num_classes=10).state_dict()
    torch.save(tuned, tmp_path / "mn04_esc.pt")
    model = strict_build("mn04", tmp_path / "mn04_esc.pt")
    assert model.classifier[5].out_features == 10
    assert_loaded(model, tuned)
    small = build("small_cnn", num_classes=6, widths=(4, 8, 8, 16)).state_dict()
    torch.save(small, tmp_path / "small.pt")
    assert_loaded(strict_build_params("small_cnn", tmp_path / "small.pt", widths=(4, 8, 8, 16)), small)
    # an explicit num_classes still wins: the checkpoint's head is skipped with the usual warning
    with pytest.warns(UserWarning, match="head not loaded"):
        assert build("mn04", num_classes=3, checkpoint=tmp_path / "mn04_esc.pt").classifier[5].out_features == 3


def test_a_checkpoint_of_another_width_is_still_refused_with_its_keys(tmp_path: Path) -> None:
    from audiointerp.errors import CheckpointError

    torch.save(build("mn05").state_dict(), tmp_path / "mn05.pt")
    with pytest.raises(CheckpointError, match="does not fit"):
        build("mn04", checkpoint=tmp_path / "mn05.pt")


def strict_build_params(name: str, checkpoint: Path, **params) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return build(name, checkpoint=checkpoint, **params)
