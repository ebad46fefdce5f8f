from __future__ import annotations

import csv
from pathlib import Path

import pytest

from audiointerp.cli import main


def test_synth_train_export_evaluate_from_the_command_line(tmp_path: Path, tiny_overrides: list[str], capsys) -> None:
    assert main(["synth", str(tmp_path / "data"), "--clips-per-class", "1", "--quiet", "--seed", "3"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "data" / "manifest.csv")))
    assert len(rows) == 24 and (tmp_path / "data" / rows[0]["path"]).is_file()

    assert main(["train", "classifier", *tiny_overrides, "train.epochs=1", "run_id=cli"]) == 0
    run = next(Path(o.split("=", 1)[1]) for o in tiny_overrides if o.startswith("output_dir=")) / "classifier" / "cli"
    assert f"run directory: {run}" in capsys.readouterr().out
    assert main(["export", str(run), "--checkpoint", "last"]) == 0
    assert (run / "export" / "manifest.json").is_file()
    assert main(["evaluate", str(run / "export"), "--out", str(tmp_path / "eval")]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and (tmp_path / "eval" / "metrics.json").is_file()
    assert main(["listen", str(run / "export"), "--out", str(tmp_path / "listen")]) == 2  # not an autoencoder
    assert "has no listening/clips.csv: it is not an autoencoder export (task 'classifier')" in capsys.readouterr().err


def test_errors_exit_with_status_2_and_name_the_cause(tmp_path: Path, tiny_overrides: list[str], capsys) -> None:
    assert main(["train", "classifier", "data.sorce=x"]) == 2
    assert "did you mean 'data.source'" in capsys.readouterr().err
    assert main(["train", "classifier", *tiny_overrides, "data.sample_rate=22050"]) == 2
    assert "front end of model 'small_cnn' expects 16000 Hz" in capsys.readouterr().err
    assert main(["export", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_listings(capsys) -> None:
    assert main(["models"]) == 0 and "small_cnn" in capsys.readouterr().out
    assert main(["configs"]) == 0 and "classifier" in capsys.readouterr().out
    assert main(["configs", "list"]) == 0 and "classifier" in capsys.readouterr().out.splitlines()


def test_configs_show_prints_the_resolved_config(capsys) -> None:
    import yaml

    from audiointerp.train import config

    if not hasattr(config, "show_config"):
        pytest.skip("train.config.show_config is not there yet")
    assert main(["configs", "show", "classifier", "train.epochs=7"]) == 0
    text = capsys.readouterr().out
    assert text.rstrip("\n") == config.show_config("classifier", ["train.epochs=7"]).rstrip("\n")
    assert yaml.safe_load(text)["train"]["epochs"] == 7
    assert main(["configs", "show", "classifer"]) == 2
    assert "did you mean 'classifier'" in capsys.readouterr().err


def test_help_builds_no_analysis_and_each_command_fills_its_own_options(capsys) -> None:
    """`audiointerp --help` and `analyze --help` import no analysis module; `analyze NAME --help` shows the
    options built from that module's Settings, with their help and defaults."""
    import subprocess
    import sys

    code = ("import sys; from audiointerp.cli import build_parser; build_parser().format_help(); "
            "print(sorted(m for m in sys.modules if m.startswith('audiointerp.analysis') or m in ('torch', 'sklearn')))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    with pytest.raises(SystemExit):
        main(["analyze", "decode", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps at the terminal's width
    assert "--factor FACTOR" in text and "--instances INSTANCES" in text and "(default: 3000)" in text
    with pytest.raises(SystemExit):
        main(["analyze", "probe", "--help"])
    assert "95% intervals" in " ".join(capsys.readouterr().out.split())


def six_class_manifest(tiny_data: Path, out: Path) -> Path:
    """Fold 1 of the built-in set labelled by material: 24 clips of 6 classes (absolute paths)."""
    rows = [r for r in csv.DictReader(open(tiny_data)) if r["fold"] == "1"]
    with open(out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "path": str(tiny_data.parent / row["path"]), "label": row["material"]})
    return out


def test_extract_keeps_a_pretrained_models_released_head(tiny_data: Path, tmp_path: Path) -> None:
    import warnings

    import numpy as np
    import torch

    from audiointerp.analysis import ActivationStore
    from audiointerp.analysis.extraction import layer_activations
    from audiointerp.models import build_pipeline
    from tests.models.test_yamnet import port_state_dict

    torch.save(port_state_dict(), tmp_path / "yamnet.pth")
    manifest = six_class_manifest(tiny_data, tmp_path / "six.csv")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["extract", "--model", "yamnet", "--checkpoint", str(tmp_path / "yamnet.pth"), "--data", str(manifest),
                     "--layers", "logits", "--pooling", "mean", "--out", str(tmp_path / "store"), "--quiet"]) == 0
    assert not [w for w in caught if "head not loaded" in str(w.message)]
    store = ActivationStore(tmp_path / "store")
    assert store.meta["data_num_classes"] == 6 and store.meta["layer_shapes"]["logits"] == [521]
    # the released head's logits: the checkpoint's own classifier, not a fresh 6-class one
    pipeline = build_pipeline("yamnet", num_classes=521, checkpoint=tmp_path / "yamnet.pth").eval()
    from audiointerp.datasets import load_manifest
    from audiointerp.datasets.manifest import ManifestDataset

    rows = load_manifest(str(manifest))
    data = ManifestDataset(rows, sample_rate=16000, seconds=None, train=False, classes=rows.class_list("label"),
                           progress=False)
    expected = layer_activations(pipeline, data[3]["audio"][None], ["logits"])["logits"].mean(1)[0].numpy()
    np.testing.assert_allclose(store.load("logits", [3])[0], expected, rtol=1e-4, atol=1e-5)

    # a fine-tuned 6-class checkpoint: its own head, with or without --num-classes
    tuned = build_pipeline("yamnet", num_classes=6).network.state_dict()
    torch.save(tuned, tmp_path / "yamnet_tuned.pth")
    for extra in ([], ["--num-classes", "6"]):
        out = tmp_path / f"tuned{len(extra)}"
        assert main(["extract", "--model", "yamnet", "--checkpoint", str(tmp_path / "yamnet_tuned.pth"), "--data",
                     str(manifest), "--layers", "logits", "--pooling", "mean", "--out", str(out), "--quiet"] + extra) == 0
        assert ActivationStore(out).meta["layer_shapes"]["logits"] == [6]


@pytest.mark.parametrize("command", [[], ["analyze"], ["compare"], ["grid"], ["sweep"], ["agent"]])
def test_every_help_page_renders(command: list[str], capsys) -> None:
    """argparse expands '%' in help texts: a literal one (a '95 % interval') must not break a help page."""
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0 and "usage: audiointerp" in capsys.readouterr().out
