"""Config loading: a shipped experiment YAML (or a path) with its `base:` chain, `key=value` overrides, and
validation against the typed schemas (`audiointerp.configs.schema`) and the task's Config dataclass.

`load_config("classifier", ["train.epochs=3"])` finds `configs/classifier.yaml` (or takes a path), applies the
overrides, and checks every key and value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from audiointerp.configs import CONFIG_DIR, available_configs, config_path
from audiointerp.configs.schema import CHOICES, ExperimentConfig
from audiointerp.errors import ConfigError, closest
from audiointerp.models.registry import model_spec
from audiointerp.train.tasks import task_class

__all__ = ["CONFIG_DIR", "MIN_COUNTS", "POSITIVE", "available_configs", "config_path", "load_config", "to_yaml"]

# Keys whose value (an int; None where the schema allows it) must be at least the bound. `train.epochs=0` is
# allowed: it gives the untrained baseline (the model evaluated as built).
MIN_COUNTS: dict[str, int] = {
    "train.epochs": 0,
    "train.max_steps": 0,
    "train.keep_last": 0,
    "data.num_workers": 0,
    "data.batch_size": 1,
    "data.eval_batch_size": 1,
    "train.gradient_accumulation_steps": 1,
    "train.eval_every_epochs": 1,
    "train.log_every_steps": 1,
    "train.checkpoint_every_steps": 1,
}
POSITIVE: tuple[str, ...] = ("optim.lr",)
"""Keys (learning rates) whose value must be > 0."""

def _default_task_schema(name: str) -> type:
    return task_class(name).Config


def _all_keys(node: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for key in node.keys():
        full = f"{prefix}{key}"
        keys.append(full)
        child = node._get_node(key)  # noqa: SLF001 - structure walk without resolving values
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():  # noqa: SLF001
            keys.extend(_all_keys(child, full + "."))
    return keys


def _parse_overrides(overrides: Sequence[str]) -> DictConfig:
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. train.epochs=5)")
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except OmegaConfBaseException as err:
        raise ConfigError(f"cannot parse overrides {list(overrides)}: {err}") from err


def _raise_merge_error(err: OmegaConfBaseException, schema: DictConfig, origin: str) -> None:
    full_key = getattr(err, "full_key", None) or ""
    if isinstance(err, ConfigKeyError) or "not in" in str(err):
        hint = closest(full_key, _all_keys(schema)) if full_key else ""
        raise ConfigError(f"unknown config key {full_key!r} in {origin}{hint}") from err
    if isinstance(err, ValidationError):
        first_line = str(err).splitlines()[0]
        raise ConfigError(f"bad value for config key {full_key!r} in {origin}: {first_line}") from err
    raise ConfigError(f"invalid config in {origin}: {err}") from err


def _load_mapping(path: Path) -> DictConfig:
    """A YAML file whose top level must be a mapping of config keys (an empty file is an empty mapping).

    A file that YAML cannot parse, or whose top level is a list or a scalar, raises `ConfigError` naming the file.
    """
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
    except Exception as err:  # yaml errors come in several types; unreadable files are OSErrors
        raise ConfigError(f"cannot read config {str(path)!r}: {err}") from err
    if data is not None and not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else "a string" if isinstance(data, str) else f"a {type(data).__name__}"
        raise ConfigError(f"config {str(path)!r}: its top level is {kind}, not a mapping of config keys "
                          "(write `key: value` lines, e.g. `experiment: my_run`)")
    try:
        raw = OmegaConf.load(path)
    except Exception as err:  # noqa: BLE001 - omegaconf's own YAML loader refuses a few things yaml accepts
        raise ConfigError(f"cannot read config {str(path)!r}: {err}") from err
    if not isinstance(raw, DictConfig):  # pragma: no cover - yaml.safe_load said it is a mapping
        raise ConfigError(f"config {str(path)!r}: its top level is not a mapping of config keys")
    return raw


def _read_with_base(path: Path, seen: tuple[Path, ...] = ()) -> DictConfig:
    """A YAML file; `base: NAME` (a shipped config or a path relative to the file) is loaded first and the
    file's keys override it, so a variant states only what differs."""
    if path.resolve() in seen:
        raise ConfigError(f"config {str(path)!r} is its own base (cycle: {' -> '.join(p.name for p in seen)})")
    raw = _load_mapping(path)
    base = raw.pop("base", None)
    if base is None:
        return raw
    relative = path.parent / str(base)
    base_path = relative if relative.suffix in (".yaml", ".yml") and relative.is_file() else config_path(str(base))
    return OmegaConf.merge(_read_with_base(base_path, (*seen, path.resolve())), raw)


def _drop_other_model_settings(raw: DictConfig, cli: DictConfig) -> None:
    """When the command line swaps `model.name`, the file's `model.params` and `model.checkpoint` described the
    other network: drop them (and its `model.frontend_params` unless both networks share a front end), so that
    `train classifier model.name=mn10` builds mn10 with its own defaults. Overrides of those keys still apply."""
    new_name, old_name = OmegaConf.select(cli, "model.name"), OmegaConf.select(raw, "model.name")
    if new_name is None or old_name is None or str(new_name) == str(old_name) or "model" not in raw:
        return

    def frontend(name: str) -> Optional[str]:
        try:
            return model_spec(str(name)).frontend
        except ConfigError:
            return None  # an unknown name: the builder's error names it later

    dropped = ["params", "checkpoint"]
    if OmegaConf.select(raw, "model.frontend") is None and frontend(new_name) != frontend(old_name):
        dropped.append("frontend_params")
    for key in dropped:
        raw.model.pop(key, None)


def load_config(
    source: str | Path | DictConfig | dict,
    overrides: Sequence[str] = (),
    task_schema: Optional[Callable[[str], type]] = None,
) -> DictConfig:
    """Load an experiment config, apply `key=value` overrides, and validate it against the schemas.

    Raises `ConfigError` for: a YAML file whose top level is not a mapping; unknown keys and values of the wrong
    type (naming the closest valid key); missing required values (`???`); values outside `CHOICES`; counts below
    their bound in `MIN_COUNTS` (`train.epochs`, `train.max_steps`, `train.keep_last`, `data.num_workers` >= 0;
    batch sizes, `gradient_accumulation_steps`, `eval_every_epochs`, `log_every_steps`,
    `checkpoint_every_steps` >= 1) and learning rates (`POSITIVE`) that are not > 0. `model.params` are checked
    against the builder's annotated signature when the model is built (`models.registry._check_params`).
    """
    task_schema = task_schema or _default_task_schema
    if isinstance(source, (DictConfig, dict)):
        raw, origin = OmegaConf.create(source), "the given config"
    else:
        path = config_path(source)
        raw, origin = _read_with_base(path), str(path)
    cli = _parse_overrides(overrides)
    _drop_other_model_settings(raw, cli)

    task_name = OmegaConf.select(cli, "task.name") or OmegaConf.select(raw, "task.name")
    if not task_name:
        raise ConfigError(f"{origin} does not name a task: set task.name (e.g. task.name=classifier)")
    schema = OmegaConf.structured(ExperimentConfig)
    schema.task = OmegaConf.structured(task_schema(str(task_name)))

    cfg = schema
    for part, part_origin in ((raw, origin), (cli, "command-line overrides")):
        try:
            cfg = OmegaConf.merge(cfg, part)
        except OmegaConfBaseException as err:
            _raise_merge_error(err, schema, part_origin)

    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"required config values are missing in {origin}: {', '.join(missing)} (give them as key=value)")
    for key, allowed in CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value not in allowed:
            raise ConfigError(f"config key {key!r} is {value!r}{closest(str(value), allowed)}; choose one of {', '.join(allowed)}")
    _check_ranges(cfg, cli, origin)
    OmegaConf.set_struct(cfg, True)
    return cfg


def _check_ranges(cfg: DictConfig, cli: DictConfig, origin: str) -> None:
    """Raise `ConfigError` naming the key, its value, where it was set (the command line or `origin`) and the bound
    when a count of `MIN_COUNTS` is below its bound or a learning rate of `POSITIVE` is not > 0. None, where the
    schema allows it (`train.max_steps`, `train.checkpoint_every_steps`), means "not set" and passes."""

    def where(key: str) -> str:
        return "the command-line overrides" if OmegaConf.select(cli, key) is not None else origin

    for key, low in MIN_COUNTS.items():
        value = OmegaConf.select(cfg, key)
        if value is not None and value < low:
            note = " (train.epochs=0 is the untrained baseline)" if key == "train.epochs" else ""
            raise ConfigError(f"config key {key!r} is {value!r} in {where(key)}: it must be >= {low}{note}")
    for key in POSITIVE:
        value = OmegaConf.select(cfg, key)
        if value is not None and not value > 0:
            raise ConfigError(f"config key {key!r} is {value!r} in {where(key)}: a learning rate must be > 0")


def to_yaml(cfg: DictConfig) -> str:
    """The fully resolved config as YAML."""
    return OmegaConf.to_yaml(cfg, resolve=True)
