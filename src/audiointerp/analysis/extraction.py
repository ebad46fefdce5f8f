"""`audiointerp extract`: stream a model's layer activations over a data set into an activation store.

Memory stays bounded: clips are read, run and written one chunk at a time. Under `accelerate launch` or
torchrun, process r takes chunks r, r + world, ... and writes its own shard. An interrupted extraction resumes:
chunks already complete in any shard are skipped (see `store.py`).

Clips of any length (`LengthProfile`, measured on the network once per extraction):

- Batches: a chunk's clips are taken longest first, in groups of at most `GROUP_BATCHES` batches (the audio held
  at once); within a group, clips of one length share a batch (`datasets.lengths.length_batches`), and front ends
  that cut fixed patches (VGGish, YAMNet: `num_patches`) pad clips of different lengths into one batch, keeping
  each clip's own patches (exact, as the semantic family's whole-clip evaluation). So every stored value is the
  clip's own, as processed alone (up to batched float arithmetic, far below 1e-5).
- Short clips: a clip shorter than the network's minimum input (`min_samples`: a patch front end's, or the
  shortest input the requested layers run on, found by bisection) is zero-padded to it; clips.csv says so
  (`padded`), and store.json counts them.
- Fixed input lengths: a network with `input_tdim` (PaSST) or a front end with a fixed length (CLAP's feature
  extractor, `nb_max_samples`) runs over a longer clip in consecutive windows of its longest input
  (`window_samples`; the last window is the remainder); clips.csv gives each clip's `windows`.
- Long recordings: a network that takes any length (a CNN) runs each clip whole by default, which is exact but
  holds a long recording's activations at once; `--max-input-seconds S` runs clips longer than S in consecutive
  windows of S as above (memory bounded by S; with `--pooling time` the windows' positions are averaged together,
  so only the few frames at each window's edges differ from the whole clip's). A clip over `LONG_CLIP_SECONDS`
  run whole gets a warning suggesting it.
- Time axes: the axes of each layer whose size follows the input's length (measured at two lengths; e.g. T of a
  CNN's [C, F, T], the tokens of a transformer's [N, D]; none for a patch front end, whose patch axis is time).
  `--pooling time` averages every one of them and the patch axis (the windows' positions together), and flattens
  the rest: one fixed-size vector per clip and layer ([C * F] for a CNN map, [D] for tokens). `none`, `mean` and
  `window` keep their meaning (over patches; `analyze manipulate` continues the network from such rows) and refuse,
  before anything is written, clips whose stored shapes would differ, suggesting `--pooling time`.
- A clip that fails (unreadable, too short, a network error) stops the extraction with a StoreError naming it; the
  chunks written before are complete, the failed one is not written, and `ActivationStore` refuses the store
  until the same command finishes it.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from audiointerp.datasets import load_manifest
from audiointerp.datasets.lengths import exact_padding, length_batches, pad_batch, patch_counts
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

MAX_WINDOW_SECONDS = 600  # a fixed input longer than this is taken as no fixed input (the probe's bound)
LONG_CLIP_SECONDS = 600  # a clip longer than this run whole through a network gets a warning (--max-input-seconds)
POOLING = ("none", "mean", "window", "time")
GROUP_BATCHES = 4  # a chunk's clips are loaded this many batches at a time (longest first), bounding the audio held
PROBE_SECONDS = 1.0  # the time axes are found by running the network at about this length and one second more
DTYPES = ("float32", "float16")

log = logging.getLogger("audiointerp")


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
        "help": "none; mean (over patches); window (the mean of --window patches from --offset); time (each "
                "layer averaged over its time axis, whatever its shape: one vector per clip and layer, for clips of "
                "different lengths)", "choices": POOLING})
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
    max_input_seconds: Optional[float] = field(default=None, metadata={
        "help": "run clips longer than this in consecutive windows of this length (memory stays bounded for long "
                "recordings; default: whole clips, or a fixed-length network's own input)"})


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


def _run_taps(pipeline: nn.Module, waveforms: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
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


@torch.no_grad()
def layer_activations(pipeline: nn.Module, waveforms: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """Activations [B, P, ...] of `layers` (P patches; 1 for front ends that do not cut patches), one pass."""
    return _run_taps(pipeline, waveforms, layers)


@dataclass(frozen=True)
class LengthProfile:
    """How a pipeline's requested layers depend on the input's length (see the module docstring).

    `min_samples`: the shortest input (samples) they run on; shorter clips are zero-padded to it.
    `window_samples`: the longest input a fixed-length network takes (PaSST's `input_tdim`), None when unbounded.
    `time_axes`: per layer, the axes of its per-patch activation (0 = the first axis after the patch axis) whose
    size follows the input's length. `patched`: the front end cuts fixed patches (padding a batch is exact)."""

    min_samples: int
    window_samples: Optional[int]
    time_axes: dict[str, list[int]]
    patched: bool

    def record(self) -> dict[str, Any]:
        return {"min_samples": self.min_samples, "window_samples": self.window_samples,
                "time_axes": {k: list(v) for k, v in self.time_axes.items()}}


def _runs(pipeline: nn.Module, samples: int, layers: Sequence[str], device: Any) -> Optional[dict[str, list[int]]]:
    """Per-patch shapes of `layers` for one input of `samples` samples, or None when the network fails on it."""
    generator = torch.Generator().manual_seed(0)
    waveform = 0.1 * torch.randn(1, int(samples), generator=generator)
    try:
        with torch.no_grad():
            out = _run_taps(pipeline, waveform.to(device), layers)
    except Exception:
        return None
    return {layer: list(value.shape[2:]) for layer, value in out.items()}


def _window_samples(pipeline: nn.Module, device: Any) -> Optional[int]:
    """The longest input of a fixed-length network: a front end's feature extractor's `nb_max_samples` (CLAP's 10 s,
    which would otherwise cut a longer clip at random), or the longest waveform whose features have at most the
    network's `input_tdim` frames (PaSST), by bisection on the front end alone; None for networks without one."""
    extractor = getattr(pipeline.frontend, "extractor", None)  # CLAP: transformers' feature extractor, 10 s
    fixed = getattr(extractor, "nb_max_samples", None)
    if isinstance(fixed, int) and fixed > 0:
        return fixed
    frames = getattr(pipeline.network, "input_tdim", None)
    if not isinstance(frames, int) or frames < 1:
        return None

    def fits(samples: int) -> bool:  # an input too short for the front end is not too long
        try:
            with torch.no_grad():
                return int(pipeline.frontend(torch.zeros(1, samples, device=device)).shape[-1]) <= frames
        except Exception:
            return True

    longest = MAX_WINDOW_SECONDS * int(getattr(pipeline, "sample_rate", 48000))
    low, high = 1, 1024
    while fits(high):
        if high > longest:  # no length is too long: the front end does not count frames (never probe GBs of zeros)
            return None
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


def length_profile(pipeline: nn.Module, layers: Sequence[str], device: Any = "cpu") -> LengthProfile:
    """Measure `LengthProfile` for `layers` of `pipeline` (eval mode): a few passes over short random inputs."""
    frontend = pipeline.frontend
    rate = int(frontend.sample_rate)
    window = _window_samples(pipeline, device)
    patched = exact_padding(frontend)
    if patched and isinstance(getattr(frontend, "min_samples", None), int):
        minimum = int(frontend.min_samples)
    else:
        low, high = 8, 16  # `low` fails (or is below any clip worth padding for), `high` runs
        while _runs(pipeline, high, layers, device) is None:
            if high >= 30 * rate or (window is not None and high >= window):
                raise StoreError(f"the network fails on every input length up to {high / rate:.1f} s: cannot extract")
            low, high = high, high * 2
        while high - low > 1 and high > 16:
            middle = (low + high) // 2
            low, high = (low, middle) if _runs(pipeline, middle, layers, device) is not None else (middle, high)
        minimum = high
    first = max(minimum, int(PROBE_SECONDS * rate))
    second = first + rate
    if window is not None:
        first, second = min(first, max(minimum, window // 2)), min(second, window)
    shapes_a, shapes_b = _runs(pipeline, first, layers, device), _runs(pipeline, second, layers, device)
    if shapes_a is None or shapes_b is None:
        raise StoreError(f"the network fails on inputs of {first} or {second} samples: cannot extract")
    time_axes = {layer: [axis for axis, (a, b) in enumerate(zip(shapes_a[layer], shapes_b[layer])) if a != b]
                 for layer in layers}
    return LengthProfile(minimum, window, time_axes, patched)


def limit_input(profile: LengthProfile, seconds: Optional[float], rate: int) -> LengthProfile:
    """`profile` whose clips run in windows of at most `seconds` (`--max-input-seconds`; None: unchanged), and
    never longer than a fixed-length network's own input. A window shorter than the network's minimum input is a
    StoreError."""
    if seconds is None:
        return profile
    samples = int(round(float(seconds) * rate))
    if samples < max(profile.min_samples, 1):
        raise StoreError(f"--max-input-seconds {seconds} is shorter than the network's minimum input "
                         f"({profile.min_samples / rate:.3f} s)")
    window = samples if profile.window_samples is None else min(samples, profile.window_samples)
    return replace(profile, window_samples=window)


def layer_shapes(pipeline: nn.Module, waveform: torch.Tensor, layers: Sequence[str]) -> dict[str, list[int]]:
    """Each layer's activation shape for one patch (what `forward_from` takes, before pooling and flattening)."""
    activations = layer_activations(pipeline, waveform[None], layers)
    return {layer: list(activations[layer].shape[2:]) for layer in layers}


def pool(activation: torch.Tensor, settings: ExtractSettings) -> torch.Tensor:
    """Pooling over the patch axis (dim 1) of [B, P, ...], then optional flattening (`none`, `mean`, `window`;
    `time` needs the layer's time axes: `time_pool`)."""
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


def time_sum(activation: torch.Tensor, time_axes: Sequence[int]) -> tuple[torch.Tensor, int]:
    """(sum over the patch axis and `time_axes` of one clip's activation [P, ...], flattened, float64; the number
    of values summed per output). `--pooling time` stores the sums of a clip's windows divided by their counts."""
    axes = [0, *(axis + 1 for axis in time_axes)]
    count = int(np.prod([activation.shape[a] for a in axes]))
    return activation.double().sum(dim=axes).flatten(), count


def _pieces(length: int, window: Optional[int]) -> list[tuple[int, int]]:
    """(start, end) of the windows a clip of `length` samples is run in: the whole clip, or consecutive windows."""
    if window is None or length <= window:
        return [(0, length)]
    return [(start, min(start + window, length)) for start in range(0, length, window)]


def _write_clips(path: Path, manifest: Any, lengths: Sequence[int], profile: LengthProfile) -> None:
    factor_names = list(manifest.factor_names)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "path", "label", "fold", "description", *factor_names, "samples", "padded",
                         "windows"])
        for index, row in enumerate(manifest.rows):
            n = int(lengths[index])
            writer.writerow([index, row.path, ";".join(row.labels), row.fold, row.description,
                             *(row.factors.get(f, "") for f in factor_names), n, int(0 < n < profile.min_samples),
                             len(_pieces(n, profile.window_samples))])


def _check_lengths(settings: ExtractSettings, dataset: Any, lengths: Sequence[int], layers: Sequence[str],
                   profile: LengthProfile, frontend: nn.Module) -> None:
    """Refuse, before anything is written, clips whose stored rows could not share one array: with `--pooling
    none`, `mean` or `window`, clips of different lengths when a layer has a time axis (or, for `none`, different
    patch counts), and clips longer than a fixed-length network's window. Names a clip of each kind."""
    if settings.pooling == "time":
        return
    rate = int(dataset.sample_rate)
    hint = "use --pooling time (each layer averaged over its time axis: one vector per clip and layer)"
    effective = [max(int(n), profile.min_samples) for n in lengths]
    if profile.window_samples is not None:
        longer = [k for k, n in enumerate(effective) if n > profile.window_samples]
        if longer:
            k = longer[0]
            raise StoreError(f"{len(longer)} clips are longer than the network's input or --max-input-seconds "
                             f"({profile.window_samples} "
                             f"samples), e.g. {dataset.paths[k]} ({effective[k] / rate:.2f} s), and run in windows "
                             f"whose activations differ in shape: {hint}")
    timed = [layer for layer in layers if profile.time_axes[layer]]
    if timed and len(set(effective)) > 1:
        short, long = int(np.argmin(effective)), int(np.argmax(effective))
        raise StoreError(f"clips of different lengths ({effective[short] / rate:.2f} s: {dataset.paths[short]}; "
                         f"{effective[long] / rate:.2f} s: {dataset.paths[long]}) give layer {timed[0]!r} (a time "
                         f"axis) different shapes, which --pooling {settings.pooling} cannot store in one array: {hint}")
    if settings.pooling == "window":  # every clip must hold the window's patches, or `pool` fails mid-store
        counts = patch_counts(frontend, effective, 1 << 30) if profile.patched else [1] * len(effective)
        needed = int(settings.offset) + int(settings.window)
        if min(counts) < needed:
            k = int(np.argmin(counts))
            raise StoreError(f"--pooling window needs {needed} patches (--offset {settings.offset} + --window "
                             f"{settings.window}), but {dataset.paths[k]} ({effective[k] / rate:.2f} s) gives "
                             f"{counts[k]}: {hint}")
    if settings.pooling == "none" and profile.patched:
        counts = patch_counts(frontend, effective, 1 << 30)
        if len(set(counts)) > 1:
            few, many = int(np.argmin(counts)), int(np.argmax(counts))
            raise StoreError(f"clips of different lengths give different patch counts ({counts[few]}: "
                             f"{dataset.paths[few]}; {counts[many]}: {dataset.paths[many]}), which --pooling none "
                             f"cannot store in one array: use --pooling mean (over patches) or --pooling time")


def _extract_chunks(settings: ExtractSettings, out: Path, state: Any, pipeline: nn.Module, dataset: Any,
                    layers: list[str], batch_size: int, progress: bool, max_chunks: Optional[int],
                    force_unlock: bool, profile: LengthProfile, lengths: Sequence[int]) -> None:
    """This process's missing chunks of the store `out`, each written to its shard once complete."""
    device = state.device
    pipeline.to(device)
    chunks = chunks_of(len(dataset), settings.chunk_size)
    own = shard_path(out, state.process_index, state.num_processes)
    done_elsewhere = done_chunks(out, exclude=own)
    state.wait_for_everyone()  # every process has read the shards before any opens its own for writing (HDF5 locks)
    writer = ShardWriter(own, layers, settings.dtype, force_unlock=force_unlock)
    try:
        done = done_elsewhere | writer.done  # after opening: a shard found damaged there was started afresh
        mine = [c for c in range(len(chunks)) if c % state.num_processes == state.process_index and c not in done]
        if max_chunks is not None:
            mine = mine[:max_chunks]
        bar = tqdm(total=sum(len(chunks[c]) for c in mine), desc=f"extract {Path(settings.model).name}", unit="clip",
                   disable=not (progress and state.is_main_process), dynamic_ncols=True)
        with bar:
            for chunk in mine:
                indices = list(chunks[chunk])
                rows = _chunk_rows(settings, pipeline, dataset, layers, batch_size, profile, indices, lengths, device,
                                   chunk, bar)
                stacked = {}
                for layer in layers:
                    shapes = {tuple(rows[i][layer].shape) for i in indices}
                    if len(shapes) > 1:
                        first = rows[indices[0]][layer].shape
                        k = next(i for i in indices if tuple(rows[i][layer].shape) != tuple(first))
                        raise StoreError(f"chunk {chunk}: clip {k} ({dataset.paths[k]}) gives layer {layer!r} the "
                                         f"shape {tuple(rows[k][layer].shape)}, clip {indices[0]} "
                                         f"{tuple(first)}: use --pooling time for clips of different lengths")
                    stacked[layer] = np.stack([rows[i][layer] for i in indices])
                writer.write_chunk(chunk, np.asarray(indices), stacked)
    finally:
        writer.close()


def _chunk_rows(settings: ExtractSettings, pipeline: nn.Module, dataset: Any, layers: list[str], batch_size: int,
                profile: LengthProfile, indices: list[int], lengths: Sequence[int], device: Any, chunk: int,
                bar: Any) -> dict[int, dict[str, np.ndarray]]:
    """Each clip's stored row per layer (float32 numpy), computed in length batches (see the module docstring)."""
    order = sorted(indices, key=lambda i: (-int(lengths[i]), i))  # longest first, by the predicted length
    group = max(1, batch_size * GROUP_BATCHES)
    rows: dict[int, dict[str, np.ndarray]] = {}
    for start in range(0, len(order), group):
        clips = order[start:start + group]
        audio: dict[int, torch.Tensor] = {}
        for i in clips:
            try:
                audio[i] = dataset[i]["audio"]
            except Exception as err:
                raise StoreError(f"chunk {chunk}: clip {i} ({dataset.paths[i]}) cannot be read: {err}; the chunks "
                                 "before it are complete, this one is not written") from err
        pieces = [(i, a, b) for i in clips for a, b in _pieces(int(audio[i].shape[-1]), profile.window_samples)]
        sizes = [max(b - a, profile.min_samples) for _, a, b in pieces]
        sums: dict[int, dict[str, list[tuple[torch.Tensor, int]]]] = {i: {layer: [] for layer in layers} for i in clips}
        for batch in length_batches(sizes, batch_size, pad=profile.patched):
            waves = []
            for k in batch:
                i, a, b = pieces[k]
                wave = audio[i][..., a:b]
                if wave.shape[-1] < profile.min_samples:
                    wave = torch.nn.functional.pad(wave, (0, profile.min_samples - wave.shape[-1]))
                waves.append(wave)
            try:
                padded, own = pad_batch(waves)
                activations = layer_activations(pipeline, padded.to(device), layers)
            except Exception as err:
                names = ", ".join(f"clip {pieces[k][0]} ({dataset.paths[pieces[k][0]]}, "
                                  f"{int(audio[pieces[k][0]].shape[-1]) / dataset.sample_rate:.2f} s)" for k in batch[:3])
                raise StoreError(f"chunk {chunk}: the network failed on {names}"
                                 f"{' and others' if len(batch) > 3 else ''}: {type(err).__name__}: {err}; the chunks "
                                 "before it are complete, this one is not written") from err
            for layer in layers:
                values = activations[layer]
                counts = patch_counts(pipeline.frontend, own.tolist(), values.shape[1])
                for position, k in enumerate(batch):
                    i = pieces[k][0]
                    mine = values[position, :counts[position]]
                    if settings.pooling == "time":
                        sums[i][layer].append(time_sum(mine, profile.time_axes[layer]))
                    else:
                        try:
                            row = pool(mine[None], settings)[0]
                        except StoreError as err:
                            raise StoreError(f"chunk {chunk}: clip {i} ({dataset.paths[i]}): {err}") from err
                        sums[i][layer].append((row, 0))
        for i in clips:
            rows[i] = {}
            for layer in layers:
                parts = sums[i][layer]
                if settings.pooling == "time":
                    total = torch.stack([p for p, _ in parts]).sum(0) / sum(n for _, n in parts)
                else:
                    total = parts[0][0]
                rows[i][layer] = total.float().cpu().numpy()
        bar.update(len(clips))
        del audio
    return rows


def extract(settings: ExtractSettings, out: str | Path, batch_size: int = 16, progress: bool = True,
            max_chunks: Optional[int] = None, force_unlock: bool = False) -> Path:
    """Write (or finish) the activation store `out`; returns its folder. `max_chunks` stops early (tests);
    `force_unlock` takes over a shard lock recorded by another host or by a live pid that does not hold it (never
    one a running writer holds).

    Clips may have any length (see the module docstring); the data needs only paths (no label or fold). Raises
    StoreError for settings the clips cannot be stored with (naming a clip and the pooling that would work), for
    another store's settings in `out`, and for a clip that fails (naming it; complete chunks stay and resume)."""
    from accelerate import PartialState

    if settings.dtype not in DTYPES:
        raise StoreError(f"dtype {settings.dtype!r}; choose float32 or float16")
    if settings.pooling not in POOLING:
        raise StoreError(f"pooling {settings.pooling!r}; choose one of {', '.join(POOLING)}")
    state = PartialState(cpu=not torch.cuda.is_available())
    out = Path(out)
    manifest = load_manifest(settings.data, format=settings.data_format)
    if settings.folds:
        manifest = manifest.select_folds(list(settings.folds))
    classes = manifest.class_list("label")
    torch.manual_seed(settings.seed)
    pipeline, identity = load_model(settings, len(classes) or None)
    layers = resolve_layers(settings.layers, identity["network_layers"])
    dataset = ManifestDataset(manifest, sample_rate=int(identity["frontend"]["sample_rate"]), seconds=None, train=False,
                              label_column=None, progress=False)
    if not len(dataset):
        raise StoreError(f"{settings.data} has no clips{' in folds ' + ','.join(settings.folds) if settings.folds else ''}")
    rate = int(identity["frontend"]["sample_rate"])
    profile = limit_input(length_profile(pipeline, layers), settings.max_input_seconds, rate)
    lengths = dataset.clip_samples()
    longest = int(np.argmax(lengths))
    if profile.window_samples is None and lengths[longest] > LONG_CLIP_SECONDS * rate and state.is_main_process:
        log.warning("%s (%.1f min) runs through the network whole: its activations are held in memory at once; "
                    "--max-input-seconds 60 would run long clips in 1-minute windows", dataset.paths[longest],
                    lengths[longest] / rate / 60)
    _check_lengths(settings, dataset, lengths, layers, profile, pipeline.frontend)
    first = dataset[0]["audio"]
    if first.shape[-1] < profile.min_samples:
        first = torch.nn.functional.pad(first, (0, profile.min_samples - first.shape[-1]))
    if profile.window_samples is not None:
        first = first[..., :profile.window_samples]
    effective = [int(n) for n in lengths]
    record = {"version": FORMAT_VERSION, **asdict(settings), "layers": layers, "num_clips": len(manifest.rows),
              "data_num_classes": len(classes), "layer_shapes": layer_shapes(pipeline, first, layers),
              "lengths": {**profile.record(), "padded_clips": sum(0 < n < profile.min_samples for n in effective),
                          "windowed_clips": sum(len(_pieces(n, profile.window_samples)) > 1 for n in effective)},
              **identity}
    if record["lengths"]["padded_clips"] and state.is_main_process:
        log.warning("%d clips are shorter than the network's minimum input (%d samples, %.3f s) and are zero-padded "
                    "to it (clips.csv: padded)", record["lengths"]["padded_clips"], profile.min_samples,
                    profile.min_samples / rate)
    if record["lengths"]["windowed_clips"] and state.is_main_process:
        log.info("%d clips are longer than the network's input or --max-input-seconds (%.2f s) and run in windows "
                 "(clips.csv: windows)",
                 record["lengths"]["windowed_clips"], (profile.window_samples or 0) / rate)
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
            _write_clips(out / CLIPS_FILE, manifest, effective, profile)
            temp = store_file.with_suffix(".tmp")
            temp.write_text(json.dumps(record, indent=2, sort_keys=True), encoding="utf-8")
            temp.replace(store_file)
    state.wait_for_everyone()
    with writing("activation store", out):  # a full or read-only disk: named; the complete chunks stay
        _extract_chunks(settings, out, state, pipeline, dataset, layers, batch_size, progress, max_chunks, force_unlock,
                        profile, lengths)
    state.wait_for_everyone()
    return out
