"""The model zoo's registry: `build(name, num_classes=..., checkpoint=PATH)` for every network.

A network's `forward` takes its front end's features; the front end is a separate module
(`build_frontend`), and `build_pipeline` joins the two into a module that takes waveforms.
"""

from __future__ import annotations

import collections.abc
import hashlib
import importlib.util
import inspect
import json
import logging
import os
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np
import torch
from torch import nn

from audiointerp.downloads import CATALOG, WeightsEntry, fetch_weights, weights_entry, weights_name
from audiointerp.errors import CheckpointError, ConfigError, closest
from audiointerp.models.frontends import AudioPipeline
from audiointerp.models.precision import full_precision_forward

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    """How to build one named network, and which front end feeds it."""

    name: str
    builder: Callable[..., nn.Module]
    frontend: str
    frontend_params: Mapping[str, Any] = field(default_factory=dict)
    weights_hint: str = ""  # where users get released weights, shown when a checkpoint file is missing


_MODELS: dict[str, ModelSpec] = {}
_FRONTENDS: dict[str, Callable[..., nn.Module]] = {}


def register_model(
    name: str, *, frontend: str, frontend_params: Optional[Mapping[str, Any]] = None, weights_hint: str = ""
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register a builder `f(num_classes, **params) -> nn.Module` under `name`."""

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = ModelSpec(name, builder, frontend, dict(frontend_params or {}), weights_hint)
        return builder

    return decorate


def register_frontend(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register a front-end class or factory under `name`.

    A front end runs in float32 with autocast off whatever the training precision (`models.precision`): the
    registered class's `forward` is wrapped by `full_precision` here, so a new front end needs nothing more. A
    factory function must return an instance of such a registered (or `full_precision_forward`) class."""

    def decorate(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _FRONTENDS:
            raise ValueError(f"front end {name!r} is registered twice")
        if isinstance(factory, type) and issubclass(factory, nn.Module):
            full_precision_forward(factory)
        _FRONTENDS[name] = factory
        return factory

    return decorate


def _ensure_zoo_imported() -> None:
    import audiointerp.models.zoo  # noqa: F401  (registers every model)


def available_models() -> list[str]:
    _ensure_zoo_imported()
    return sorted(_MODELS)


def available_frontends() -> list[str]:
    _ensure_zoo_imported()
    return sorted(_FRONTENDS)


def model_spec(name: str) -> ModelSpec:
    _ensure_zoo_imported()
    if name not in _MODELS:
        raise ConfigError(f"unknown model {name!r}{closest(name, _MODELS)}; available: {', '.join(sorted(_MODELS))}")
    return _MODELS[name]


_SEQUENCE_ORIGINS = (list, tuple, collections.abc.Sequence, collections.abc.MutableSequence)
_MAPPING_ORIGINS = (dict, collections.abc.Mapping, collections.abc.MutableMapping)


def _annotations(factory: Callable[..., Any]) -> dict[str, Any]:
    """The resolved type hints of a builder's (or a front-end class's `__init__`) parameters; {} when they cannot be
    resolved (a hint naming something not importable), so that such a builder is only checked by name."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        return typing.get_type_hints(target)
    except Exception:  # noqa: BLE001 - unresolvable forward references, C builtins: no annotations to check
        return {}


def _type_name(hint: Any) -> str:
    """How a type hint reads in a message: int, float or None, a sequence of int, one of 'a', 'b'."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return "any value"
    if hint is type(None):
        return "None"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin in _SEQUENCE_ORIGINS:
        if origin is tuple and args and (len(args) != 2 or args[1] is not Ellipsis):
            return f"a sequence of {len(args)} ({', '.join(_type_name(a) for a in args)})"
        return f"a sequence of {_type_name(args[0])}" if args else "a sequence"
    if origin in _MAPPING_ORIGINS:
        return f"a mapping of {_type_name(args[0])} to {_type_name(args[1])}" if len(args) == 2 else "a mapping"
    return getattr(hint, "__name__", str(hint))


def _type_problem(value: Any, hint: Any) -> Optional[str]:
    """Why `value` does not fit the type hint `hint` ('' when it does not fit as a whole, a note on the first bad
    item for sequences and mappings), or None when it fits. Hints other than int, float, bool, str, None, Any,
    Literal, Optional/Union, list/tuple/Sequence and dict/Mapping are not checked (None)."""
    from omegaconf import DictConfig, ListConfig

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is object:
        return None
    if hint is type(None):
        return None if value is None else ""
    if hint is bool:
        return None if isinstance(value, (bool, np.bool_)) else ""
    if hint is int:
        return None if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else ""
    if hint is float:  # an int is a fine float (dropout: 0)
        return None if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) else ""
    if hint is str:  # a path object is a fine path string (pretrained=Path(...))
        return None if isinstance(value, (str, os.PathLike)) else ""
    if origin is typing.Literal:
        return None if any(value == a and type(value) is type(a) for a in args) else ""
    if origin in (typing.Union, types.UnionType):
        problems = [_type_problem(value, a) for a in args]
        if any(p is None for p in problems):
            return None
        return next((p for p in problems if p), "")
    if origin in _SEQUENCE_ORIGINS or hint in _SEQUENCE_ORIGINS:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple, ListConfig)):
            return ""
        items = list(value)
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(items) != len(args):
                return f"{len(items)} items instead of {len(args)}"
            item_hints = list(args)
        else:
            item_hints = [args[0] if args else Any] * len(items)
        for k, (item, item_hint) in enumerate(zip(items, item_hints)):
            if _type_problem(item, item_hint) is not None:
                return f"item {k} {item!r} is not {_type_name(item_hint)}"
        return None
    if origin in _MAPPING_ORIGINS or hint in _MAPPING_ORIGINS:
        if not isinstance(value, (Mapping, DictConfig)):
            return ""
        key_hint, value_hint = args if len(args) == 2 else (Any, Any)
        for key, item in value.items():
            if _type_problem(key, key_hint) is not None:
                return f"key {key!r} is not {_type_name(key_hint)}"
            if _type_problem(item, value_hint) is not None:
                return f"the value of {key!r}, {item!r}, is not {_type_name(value_hint)}"
        return None
    return None  # a class or construct this checker does not know: the builder checks it


def _shown(value: Any) -> str:
    """`value` as a message shows it: config containers as plain lists and dicts."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(value, (DictConfig, ListConfig)):
        return repr(OmegaConf.to_container(value))
    return repr(value)


def _check_params(what: str, factory: Callable[..., Any], params: Mapping[str, Any]) -> None:
    """Raise `ConfigError` unless every key of `params` is a parameter of `factory` and its value fits the
    parameter's type annotation.

    Names: a key that is no parameter (unless the factory takes `**kwargs`) is named with the closest valid one.
    Types: checked against `typing.get_type_hints` of the builder (a class: its `__init__`) for int, float (an int
    fits), bool, str (an `os.PathLike` fits), None/Optional, Union, Literal, Any, list/tuple/Sequence (an omegaconf ListConfig counts; its
    items are checked) and dict/Mapping; parameters without an annotation, or annotated with anything else, are
    not checked. The message names the parameter, the value and the expected type, e.g.
    "model 'small_cnn' parameter 'widths' is 8, expected a sequence of int".
    """
    signature = inspect.signature(factory)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
    valid = [n for n, p in signature.parameters.items() if n != "num_classes" and n != "self"
             and p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)]
    if not takes_any:
        for key in params:
            if key not in valid:
                raise ConfigError(f"{what} has no parameter {key!r}{closest(key, valid)}; its parameters: {', '.join(valid)}")
    hints = _annotations(factory)
    for key, value in params.items():
        if key not in hints or key not in valid:
            continue
        problem = _type_problem(value, hints[key])
        if problem is not None:
            note = f" ({problem})" if problem else ""
            raise ConfigError(f"{what} parameter {key!r} is {_shown(value)}, expected {_type_name(hints[key])}{note}")


def needs_classes(name: str) -> bool:
    """Whether `build(name)` needs `num_classes` (its builder takes one with no default: no released head)."""
    parameter = inspect.signature(model_spec(name).builder).parameters.get("num_classes")
    return parameter is not None and parameter.default is inspect.Parameter.empty


def checkpoint_classes(model: nn.Module, state: Mapping[str, torch.Tensor], built: Optional[int]) -> Optional[int]:
    """The class count of the head (`model.head_prefix`) that the state dict `state` holds, or None when it holds no
    head. `model` was built with `built` classes (None: without a head).

    With a head in the model, the count follows from the head tensors whose first dimension (a linear layer's or a
    convolution's outputs, a BatchNorm's channels, an attention head's `2 * heads * classes` rows) alone differs
    from the model's: the checkpoint's size is `built` times its size over the model's. Head tensors that differ
    elsewhere (another architecture) are left to `load_weights` to report. Without a head in the model, the count
    is the first dimension of the checkpoint's first two-dimensional head weight (a linear head's rows).
    """
    heads = _head_prefixes(model)
    in_head = lambda key: any(key.startswith(p) for p in heads)  # noqa: E731
    head_keys = [k for k in state if in_head(k)]
    if not head_keys:
        return None
    own = model.state_dict()
    if built is None or not any(in_head(k) for k in own):
        weights = [k for k in head_keys if k.endswith("weight") and state[k].dim() == 2]
        return int(state[weights[0]].shape[0]) if weights else None
    counts = set()
    for key in head_keys:
        mine, theirs = (tuple(own[key].shape), tuple(state[key].shape)) if key in own else ((), ())
        if not mine or len(mine) != len(theirs) or mine[1:] != theirs[1:] or mine[0] == theirs[0]:
            continue
        if (theirs[0] * built) % mine[0] == 0:
            counts.add(theirs[0] * built // mine[0])
    if len(counts) > 1:
        raise CheckpointError(f"the checkpoint's head tensors imply different class counts {sorted(counts)}: pass num_classes")
    return counts.pop() if counts else built


def build(name: str, num_classes: Optional[int] = None,
          checkpoint: str | Path | Mapping[str, torch.Tensor] | None = None, **params: Any) -> nn.Module:
    """Build the network `name` (features in, outputs out), optionally loading local weights.

    `num_classes` sizes the classification head. Left out (None):

    - with a `checkpoint`, the head takes the checkpoint's own class count (read from the head tensors,
      `head_prefix`; a checkpoint without head tensors gives the released head, or none);
    - without one, a pretrained zoo model gets its released head (its builder's default: 527 AudioSet classes for
      EfficientAT mn/dymn and PaSST, 521 for YAMNet, semDNN's 300-d output; BEATs and CLAP: no head, features);
    - a model with no released head (`small_cnn`, `catdnn`) raises a `ConfigError` asking for `num_classes`.

    A model that takes no `num_classes` (autoencoders, `cae`) ignores it. `checkpoint` is a local file (see
    `read_state_dict`) or a state dict in memory; `load_weights` loads it.
    """
    spec = model_spec(name)
    params = resolve_weights_params(params)
    _check_params(f"model {name!r}", spec.builder, params)
    takes_classes = inspect.signature(spec.builder).parameters.get("num_classes")
    source = str(checkpoint) if isinstance(checkpoint, (str, Path)) else None
    if takes_classes is None:
        model = spec.builder(**params)
    elif num_classes is not None:
        model = spec.builder(num_classes=num_classes, **params)
    else:
        default = takes_classes.default
        state = None
        if checkpoint is not None:
            if isinstance(checkpoint, (str, Path)):
                source = str(checkpoint)
                state = read_state_dict(checkpoint, weights_hint(spec))
            else:
                state = dict(checkpoint)
            checkpoint = state  # read once
        if default is inspect.Parameter.empty and state is None:
            raise ConfigError(f"model {name!r} needs num_classes: it has no released head, so give num_classes=N "
                              "(`audiointerp extract --num-classes N`), or a checkpoint to read the count from")
        built = 1 if default is inspect.Parameter.empty else default  # a one-class probe when there is no default
        model = spec.builder(**params) if built is default else spec.builder(num_classes=built, **params)
        if state is not None:
            remap = getattr(model, "remap_state_dict", None)
            count = checkpoint_classes(model, remap(state) if callable(remap) else state, built)
            if count is None and default is inspect.Parameter.empty:
                raise ConfigError(f"model {name!r} needs num_classes: it has no released head and the checkpoint "
                                  "holds none to read the count from")
            if count is not None and count != built:
                model = spec.builder(num_classes=count, **params)
    if checkpoint is not None:  # what was loaded and which head was skipped (kept at its fresh initialisation)
        model.load_report = load_weights(model, checkpoint, hint=weights_hint(spec), source=source)
    return model


def build_frontend(name: str, **params: Any) -> nn.Module:
    """Build a front end by its own name, or by a model's name (that model's front end and defaults)."""
    _ensure_zoo_imported()
    if name in _MODELS:
        spec = _MODELS[name]
        name, params = spec.frontend, {**spec.frontend_params, **params}
    if name not in _FRONTENDS:
        raise ConfigError(f"unknown front end {name!r}{closest(name, _FRONTENDS)}; available: {', '.join(sorted(_FRONTENDS))}")
    params = resolve_weights_params(params)
    _check_params(f"front end {name!r}", _FRONTENDS[name], params)
    return _FRONTENDS[name](**params)


def build_pipeline(
    name: str,
    num_classes: Optional[int] = None,
    checkpoint: str | Path | None = None,
    params: Optional[Mapping[str, Any]] = None,
    frontend: Optional[str] = None,
    frontend_params: Optional[Mapping[str, Any]] = None,
) -> nn.Module:
    """Front end + network as one module taking waveforms (see `AudioPipeline`)."""
    network = build(name, num_classes=num_classes, checkpoint=checkpoint, **dict(params or {}))
    front = build_frontend(frontend or name, **dict(frontend_params or {}))
    return AudioPipeline(front, network)


# --- checkpoints -------------------------------------------------------------------------------------------


def weights_validator(entry: WeightsEntry) -> Optional[Callable[[Path], None]]:
    """The check that a downloaded file of the catalog entry loads into its zoo model, strictly and with the
    catalog's class count (`entry.num_classes`: a file whose head has another count, or none, is refused), for
    `downloads.fetch_weights(validate=...)`; None for entries that are no zoo network (word vectors) or that the
    zoo cannot build (`entry.loads` false)."""
    if entry.model is None or not entry.loads:
        return None
    model, params = entry.model, dict(entry.params)
    if model == "clap" and importlib.util.find_spec("transformers") is None:
        log.warning("weights %r: transformers is not installed, so the folder is checked by its hash only "
                    "(pip install 'audiointerp[clap]')", entry.name)
        return None
    if entry.use == "pretrained":
        return lambda path: _quiet_build(model, pretrained=str(path), **params)
    if entry.num_classes is None:
        return lambda path: _quiet_build(model, checkpoint=path, **params)

    def with_the_catalogs_head(path: Path) -> None:
        skipped = _quiet_build(model, num_classes=entry.num_classes, checkpoint=path, **params).load_report.skipped_head
        if skipped:
            raise CheckpointError(f"its classification head is not the catalog's {entry.num_classes} classes "
                                  f"(head tensors {', '.join(skipped[:3])} differ or are missing): another release")
    return with_the_catalogs_head


def _quiet_build(name: str, **kwargs: Any) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build(name, **kwargs)


def fetch_checked(name: str, sha256: Optional[str] = None, progress: bool = True) -> Path:
    """The local path of the catalog's weights `name`, downloaded on first use and checked to load into its zoo
    model (see `downloads.fetch_weights`); `sha256` pins the file's hash."""
    entry = weights_entry(name)
    return fetch_weights(name, validate=weights_validator(entry), sha256=sha256, progress=progress)


def resolve_checkpoint(checkpoint: str | Path) -> Path:
    """A checkpoint argument as a local path: `weights:NAME` is the catalog's file (downloaded on first use,
    unless `AUDIOINTERP_OFFLINE=1`; `fetch_checked`); any other path unchanged."""
    name = weights_name(checkpoint)
    return Path(checkpoint) if name is None else fetch_checked(name)


def resolve_weights_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Builder or front-end parameters with every `weights:NAME` string replaced by that entry's local path (a
    hub folder for CLAP's `pretrained`), fetched on first use."""
    return {k: str(resolve_checkpoint(v)) if isinstance(v, str) and weights_name(v) is not None else v
            for k, v in params.items()}


_CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "network", "weights")
EXPORT_WEIGHTS = "model.safetensors"  # an export folder's weights (train/export.py's WEIGHTS)
EXPORT_MANIFEST = "manifest.json"  # an export folder's sha256 list (train/export.py's MANIFEST)


def sha256(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks (exports' manifests, stores' model hashes); `weights:NAME`
    is that catalog entry's cached file (`resolve_checkpoint`), so a store extracted with it records its hash."""
    path = resolve_checkpoint(path)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export_weights(folder: Path) -> Path:
    """The weights file of an export folder given as a checkpoint: `folder/model.safetensors`.

    When the folder has a `manifest.json` (every audiointerp export does), the weights must be listed there and
    match their sha256; a folder without `model.safetensors`, a manifest that cannot be read or does not list the
    weights, and a hash mismatch raise `CheckpointError` naming the folder. (models/ cannot import
    `train.export.verify_export`; this checks the weights file only, the one file a network reads.)
    """
    weights = folder / EXPORT_WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"checkpoint {str(folder)!r} is a folder without {EXPORT_WEIGHTS}: give a weights file "
                              f"(.safetensors, .pt, ...) or an export folder (`audiointerp export RUN_DIR`)")
    manifest_path = folder / EXPORT_MANIFEST
    if manifest_path.is_file():
        try:
            listed = json.loads(manifest_path.read_text(encoding="utf-8"))["files"]
            expected = listed.get(EXPORT_WEIGHTS) if isinstance(listed, Mapping) else None
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"export {str(folder)!r}: cannot read {EXPORT_MANIFEST} ({err})") from err
        if expected is None:
            raise CheckpointError(f"export {str(folder)!r}: {EXPORT_MANIFEST} does not list {EXPORT_WEIGHTS} "
                                  "(modified or corrupt)")
        if sha256(weights) != expected:
            raise CheckpointError(f"export {str(folder)!r}: {EXPORT_WEIGHTS} does not match its sha256 in "
                                  f"{EXPORT_MANIFEST} (modified or corrupt)")
    return weights


def weights_hint(spec: ModelSpec) -> str:
    """Where the released weights of a model are, for a missing-file message: its catalog names (`weights:NAME`,
    downloaded on first use) and its upstream hint."""
    names = sorted(name for name, entry in CATALOG.items() if entry.model == spec.name)
    if not names:
        return spec.weights_hint
    more = f" (or {', '.join(names[1:4])}{', ...' if len(names) > 4 else ''})" if len(names) > 1 else ""
    upstream = f"; or get it from {spec.weights_hint}" if spec.weights_hint else ""
    return f"give weights:{names[0]}{more} to download it{upstream}"


def read_state_dict(path: str | Path, hint: str = "") -> dict[str, torch.Tensor]:
    """Read a state dict from .safetensors, or from .pt/.pth/.bin/.ckpt with `torch.load(weights_only=True)`.

    `path` may also be an export folder: its `model.safetensors` (checked against `manifest.json`'s sha256, see
    `export_weights`), whose `network.` weights are returned, or `weights:NAME` (`resolve_checkpoint`).
    """
    path = resolve_checkpoint(path)
    if path.is_dir():
        path = export_weights(path)
    if not path.is_file():
        if hint.startswith("give weights:"):
            where = f" {hint[0].upper()}{hint[1:]} and pass its local path."
        else:
            where = f" Get it from {hint} and pass its local path." if hint else ""
        raise CheckpointError(f"checkpoint file {str(path)!r} does not exist.{where}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: {err}") from err
    while isinstance(state, Mapping) and not any(isinstance(v, torch.Tensor) for v in state.values()):
        inner = next((state[k] for k in _CONTAINER_KEYS if isinstance(state.get(k), Mapping)), None)
        if inner is None:
            raise CheckpointError(f"checkpoint {str(path)!r} holds no tensors (top-level keys: {list(state)[:10]})")
        state = inner
    if not isinstance(state, Mapping):
        raise CheckpointError(f"checkpoint {str(path)!r} is not a state dict (got {type(state).__name__})")
    state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if state and all(k.startswith("module.") for k in state):  # saved from DistributedDataParallel
        state = {k[len("module.") :]: v for k, v in state.items()}
    if state and any(k.startswith("network.") for k in state) and all(k.startswith(("network.", "frontend.")) for k in state):
        # an audiointerp export (front end + network): the network's weights
        state = {k[len("network.") :]: v for k, v in state.items() if k.startswith("network.")}
    return state


@dataclass
class LoadReport:
    """What `load_weights` did: keys loaded, and head keys left at their initialisation."""

    loaded: list[str]
    skipped_head: list[str]


def _head_prefixes(model: nn.Module) -> tuple[str, ...]:
    prefix = getattr(model, "head_prefix", ())
    return (prefix,) if isinstance(prefix, str) else tuple(prefix)


def load_weights(model: nn.Module, checkpoint: str | Path | Mapping[str, torch.Tensor], hint: str = "",
                 source: Optional[str] = None) -> LoadReport:
    """Load weights strictly, except a classification head of another class count, which is skipped with a warning.

    Any other missing, unexpected or mis-shaped key means the wrong architecture: `CheckpointError` lists them.
    `source` names a state dict given in memory in messages (default: the file's path, or "the given state dict").
    """
    if source is None:
        source = str(checkpoint) if isinstance(checkpoint, (str, Path)) else "the given state dict"
    state = read_state_dict(checkpoint, hint) if isinstance(checkpoint, (str, Path)) else dict(checkpoint)
    remap = getattr(model, "remap_state_dict", None)
    if callable(remap):
        state = remap(state)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    heads = _head_prefixes(model)
    in_head = lambda key: any(key.startswith(p) for p in heads)  # noqa: E731
    problems = missing + unexpected + mismatched
    if problems and not all(in_head(k) for k in problems):
        lines = [f"  missing from checkpoint: {k} {tuple(own[k].shape)}" for k in missing if not in_head(k)]
        lines += [f"  not in model: {k} {tuple(state[k].shape)}" for k in unexpected if not in_head(k)]
        lines += [f"  shape {tuple(state[k].shape)} in checkpoint, {tuple(own[k].shape)} in model: {k}" for k in mismatched]
        shown = "\n".join(lines[:25]) + (f"\n  ... and {len(lines) - 25} more" if len(lines) > 25 else "")
        raise CheckpointError(
            f"checkpoint {str(source)!r} does not fit {type(model).__name__} ({len(lines)} mismatched keys):\n{shown}"
        )
    skipped = sorted(set(problems))
    if skipped:
        head_shapes = {k: tuple(state[k].shape) for k in skipped if k in state}
        warnings.warn(
            f"checkpoint {str(source)!r}: head not loaded (checkpoint {head_shapes}, model "
            f"{ {k: tuple(own[k].shape) for k in skipped if k in own} }); it keeps its fresh initialisation",
            stacklevel=2,
        )
    loadable = {k: v for k, v in state.items() if k in own and k not in skipped}
    model.load_state_dict(loadable, strict=not skipped)
    return LoadReport(loaded=sorted(loadable), skipped_head=skipped)
