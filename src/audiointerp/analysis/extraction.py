"""`audiointerp extract`: stream a model's layer activations over a data set into an activation store.

Memory stays bounded: clips are read, run and written one chunk at a time. Under `accelerate launch` or
torchrun, process r takes chunks r, r + world, ... and writes its own shard. An interrupted extraction resumes:
chunks already complete in any shard are skipped (see `store.py`).
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from audiointerp.datasets import load_manifest
from audiointerp.datasets.manifest import ManifestDataset
from audiointerp.datasets.store import (
    CLIPS_FILE,
    FORMAT_VERSION,
    STORE_FILE,
    ShardWriter,
    StoreError,
    chunks_of,
    done_chunks,
    shard_path,
)
from audiointerp.errors import writing
from audiointerp.models import build_pipeline
from audiointerp.models.archisound import AutoencoderEncoder, AutoencoderWrapper, WaveformFrontend
from audiointerp.models.frontends import AudioPipeline
from audiointerp.models.registry import export_weights, needs_classes, sha256
from audiointerp.train.export import load_export, verify_export

POOLING = ("none", "mean", "window")
DTYPES = ("float32", "float16")


@dataclass
class ExtractSettings:
    """What a store holds; a resumed extraction must ask for the same. Each field's `metadata` holds its help and
    its command-line form (see `analysis.command`): `audiointerp extract` is built from these fields."""

    model: str = field(metadata={"help": "a zoo name (with --checkpoint) or an export folder"})
    data: str = field(metadata={"help": "a manifest CSV or dataset root"})
    layers: list[str] = field(metadata={
        "help": "comma-separated taps; a number n means layer<n> (or the n-th tap)", "many": "comma"})
    dtype: str = field(default="float32", metadata={"help": "stored precision", "choices": DTYPES})
    pooling: str = field(default="none", metadata={
        "help": "over patches: none, mean, or the mean of --window patches from --offset", "choices": POOLING})
    window: int = field(default=1, metadata={"help": "patches per window (--pooling window)"})
    offset: int = field(default=0, metadata={"help": "first patch of the window (--pooling window)"})
    flatten: bool = field(default=False, metadata={"help": "one vector per clip and layer"})
    chunk_size: int = field(default=256, metadata={"help": "clips per chunk: the unit of resuming and sharding"})
    data_format: str = field(default="auto", metadata={
        "help": "dataset layout (auto, manifest, esc50, urbansound8k, fsd50k, msos)", "flag": "--format"})
    folds: Optional[list[str]] = field(default=None, metadata={"help": "only these folds (default: all)", "many": "+"})
    checkpoint: Optional[str] = field(default=None, metadata={"help": "local weights of a zoo model"})
    num_classes: Optional[int] = field(default=None, metadata={
        "help": "the head size of a fine-tuned checkpoint (default: a pretrained model's released head, the "
                "checkpoint's own count, or for small_cnn/catdnn without a checkpoint the data's classes)"})
    seed: int = field(default=0, metadata={
        "help": "seeds a zoo model's random initialisation (no checkpoint), the same in every process"})


def zoo_classes(settings: ExtractSettings, data_classes: Optional[int]) -> Optional[int]:
    """The `num_classes` a zoo model is built with: `settings.num_classes` when given (a fine-tuned checkpoint);
    else None, so that `build` gives a pretrained model its released head or the checkpoint's own count; only a
    model with no released head and no checkpoint (a seeded random `small_cnn`, `catdnn`) takes the data's count."""

    if settings.num_classes is not None:
        return settings.num_classes
    if settings.checkpoint is None and needs_classes(settings.model):
        return data_classes
    return None


def checkpoint_hash(path: Path) -> str:
    """The sha256 of a checkpoint's weights: the file, or an export folder's `model.safetensors`."""

    return sha256(export_weights(path) if path.is_dir() else path)


def load_model(settings: ExtractSettings, num_classes: Optional[int]) -> tuple[nn.Module, dict[str, Any]]:
    """The pipeline (front end + tapped network) in eval mode, and what identifies it (name, weights' hash,
    front end). `num_classes` is the data's class count, used only as `zoo_classes` says."""

    source = Path(settings.model)
    if (source / "manifest.json").is_file():
        manifest = verify_export(source)
        pipeline = load_export(source)
        identity = {"model": str(source.resolve()), "model_hash": manifest["files"].get("model.safetensors"),
                    "network": manifest.get("model")}
    else:
        pipeline = build_pipeline(settings.model, num_classes=zoo_classes(settings, num_classes),
                                  checkpoint=settings.checkpoint)
        identity = {"model": settings.model, "network": settings.model,
                    "model_hash": checkpoint_hash(Path(settings.checkpoint)) if settings.checkpoint else None}
    if isinstance(pipeline, AutoencoderWrapper) and not isinstance(pipeline, AutoencoderEncoder):
        # an autoencoder export: its encoder's layers, at the rate its task fed it
        encoder = AutoencoderEncoder(pipeline.autoencoder, pipeline.input_rate, pipeline.ae_rate)
        pipeline = AudioPipeline(WaveformFrontend(pipeline.input_rate), encoder)
    if not hasattr(pipeline, "frontend") or not hasattr(getattr(pipeline, "network", None), "stages"):
        raise StoreError(f"{settings.model} is not a front end + tapped network: nothing to extract")
    frontend = pipeline.frontend
    identity["frontend"] = {"class": type(frontend).__name__, "sample_rate": int(frontend.sample_rate),
                            **{k: v for k, v in vars(frontend).items() if isinstance(v, (int, float, str, bool))
                               and not k.startswith("_") and k != "training"}}
    identity["network_layers"] = pipeline.network.layer_names()
    return pipeline.eval(), identity


def store_pipeline(meta: dict[str, Any]) -> nn.Module:
    """The pipeline a store was extracted from (its `store.json`), rebuilt with the same weights (checked by
    sha256; a seeded random zoo model is rebuilt from its seed), in eval mode."""
    names = {f.name for f in fields(ExtractSettings)}
    settings = ExtractSettings(**{key: value for key, value in meta.items() if key in names})
    torch.manual_seed(settings.seed)
    pipeline, identity = load_model(settings, int(meta.get("data_num_classes") or 0) or None)
    if identity["model_hash"] != meta.get("model_hash"):
        raise StoreError(f"the weights of {settings.model} changed since the store was extracted (sha256 "
                         f"{identity['model_hash']} against {meta.get('model_hash')}): extract it again")
    return pipeline


def resolve_layers(requested: Sequence[str], names: Sequence[str]) -> list[str]:
    """Tap names; a number n means `layer<n>` when the network has it, else its n-th tap (1-based)."""
    resolved = []
    for item in requested:
        item = str(item).strip()
        if item in names:
            resolved.append(item)
        elif item.isdigit() and f"layer{item}" in names:
            resolved.append(f"layer{item}")
        elif item.isdigit() and 1 <= int(item) <= len(names):
            resolved.append(names[int(item) - 1])
        else:
            raise StoreError(f"no layer {item!r}; the network's layers: {', '.join(names)}")
    return resolved


@torch.no_grad()
def layer_activations(pipeline: nn.Module, waveforms: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """Activations [B, P, ...] of `layers` (P patches; 1 for front ends that do not cut patches), one pass."""
    features = pipeline.frontend(waveforms)
    batch = features.shape[0]
    patches = features.shape[1] if features.dim() == 5 else 1
    x = features.flatten(0, 1) if features.dim() == 5 else features
    wanted, out = set(layers), {}
    for name, stage in pipeline.network.stages():
        x = stage(x)
        if name in wanted:
            out[name] = x.reshape(batch, patches, *x.shape[1:])
            if len(out) == len(wanted):
                break
    return out


def layer_shapes(pipeline: nn.Module, waveform: torch.Tensor, layers: Sequence[str]) -> dict[str, list[int]]:
    """Each layer's activation shape for one patch (what `forward_from` takes, before pooling and flattening)."""
    activations = layer_activations(pipeline, waveform[None], layers)
    return {layer: list(activations[layer].shape[2:]) for layer in layers}


def pool(activation: torch.Tensor, settings: ExtractSettings) -> torch.Tensor:
    """Time pooling over the patch axis (dim 1), then optional flattening."""
    if settings.pooling == "mean":
        activation = activation.mean(dim=1)
    elif settings.pooling == "window":
        end = settings.offset + settings.window
        if activation.shape[1] < end:
            raise StoreError(f"pooling window [{settings.offset}, {end}) needs {end} patches, clips have {activation.shape[1]}")
        activation = activation[:, settings.offset:end].mean(dim=1)
    elif settings.pooling != "none":
        raise StoreError(f"pooling {settings.pooling!r}; choose one of {', '.join(POOLING)}")
    return activation.flatten(1) if settings.flatten else activation


def _write_clips(path: Path, manifest) -> None:
    factor_names = list(manifest.factor_names)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "path", "label", "fold", "description", *factor_names])
        for index, row in enumerate(manifest.rows):
            writer.writerow([index, row.path, ";".join(row.labels), row.fold, row.description,
                             *(row.factors.get(f, "") for f in factor_names)])


def extract(settings: ExtractSettings, out: str | Path, batch_size: int = 16, progress: bool = True,
            max_chunks: Optional[int] = None, force_unlock: bool = False) -> Path:
    """Write (or finish) the activation store `out`; returns its folder. `max_chunks` stops early (tests);
    `force_unlock` takes over a shard lock recorded by another host or by a live pid that does not hold it (never
    one a running writer holds)."""
    from accelerate import PartialState

    if settings.dtype not in DTYPES:
        raise StoreError(f"dtype {settings.dtype!r}; choose float32 or float16")
    state = PartialState(cpu=not torch.cuda.is_available())
    out = Path(out)
    manifest = load_manifest(settings.data, format=settings.data_format)
    if settings.folds:
        manifest = manifest.select_folds(list(settings.folds))
    classes = manifest.class_list("label")
    torch.manual_seed(settings.seed)
    pipeline, identity = load_model(settings, len(classes))
    layers = resolve_layers(settings.layers, identity["network_layers"])
    dataset = ManifestDataset(manifest, sample_rate=int(identity["frontend"]["sample_rate"]), seconds=None, train=False,
                              classes=classes, progress=False)
    if not len(dataset):
        raise StoreError(f"{settings.data} has no clips{' in folds ' + ','.join(settings.folds) if settings.folds else ''}")
    record = {"version": FORMAT_VERSION, **asdict(settings), "layers": layers, "num_clips": len(manifest.rows),
              "data_num_classes": len(classes),
              "layer_shapes": layer_shapes(pipeline, dataset[0]["audio"], layers), **identity}
    store_file = out / STORE_FILE
    if store_file.is_file():
        previous = json.loads(store_file.read_text(encoding="utf-8"))
        differs = sorted(k for k in record if previous.get(k) != record[k])
        if differs:
            raise StoreError(f"{out} holds a store written with other settings ({', '.join(differs)}); choose another "
                             "--out or remove it")
    elif state.is_main_process:
        with writing("activation store", out):
            out.mkdir(parents=True, exist_ok=True)
            _write_clips(out / CLIPS_FILE, manifest)
            temp = store_file.with_suffix(".tmp")
            temp.write_text(json.dumps(record, indent=2, sort_keys=True), encoding="utf-8")
            temp.replace(store_file)
    state.wait_for_everyone()
    with writing("activation store", out):  # a full or read-only disk: named; the complete chunks stay
        _extract_chunks(settings, out, state, pipeline, dataset, layers, batch_size, progress, max_chunks, force_unlock)
    state.wait_for_everyone()
    return out


def _extract_chunks(settings: ExtractSettings, out: Path, state: Any, pipeline: nn.Module, dataset: Any,
                    layers: list[str], batch_size: int, progress: bool, max_chunks: Optional[int],
                    force_unlock: bool) -> None:
    """This process's missing chunks of the store `out`, each written to its shard once complete."""
    device = state.device
    pipeline.to(device)
    chunks = chunks_of(len(dataset), settings.chunk_size)
    done = done_chunks(out)
    state.wait_for_everyone()  # every process has read the shards before any opens its own for writing (HDF5 locks)
    mine = [c for c in range(len(chunks)) if c % state.num_processes == state.process_index and c not in done]
    if max_chunks is not None:
        mine = mine[:max_chunks]
    writer = ShardWriter(shard_path(out, state.process_index, state.num_processes), layers, settings.dtype,
                         force_unlock=force_unlock)
    try:
        bar = tqdm(total=sum(len(chunks[c]) for c in mine), desc=f"extract {Path(settings.model).name}", unit="clip",
                   disable=not (progress and state.is_main_process), dynamic_ncols=True)
        with bar:
            for chunk in mine:
                collected: dict[str, list[np.ndarray]] = {layer: [] for layer in layers}
                indices = list(chunks[chunk])
                for start in range(0, len(indices), batch_size):
                    batch = [dataset[i]["audio"] for i in indices[start:start + batch_size]]
                    lengths = {tuple(a.shape) for a in batch}
                    if len(lengths) > 1:
                        raise StoreError("clips of different lengths in one batch: use --batch-size 1 with --pooling mean")
                    activations = layer_activations(pipeline, torch.stack(batch).to(device), layers)
                    for layer in layers:
                        collected[layer].append(pool(activations[layer], settings).float().cpu().numpy())
                    bar.update(len(batch))
                writer.write_chunk(chunk, np.asarray(indices), {k: np.concatenate(v) for k, v in collected.items()})
    finally:
        writer.close()
