"""Config loading: a shipped experiment YAML (or a path) with its `base:` chain, `key=value` overrides, and
validation against the typed schemas (`audiointerp.configs.schema`) and the task's Config dataclass.

`load_config("classifier", ["train.epochs=3"])` finds `configs/classifier.yaml` (or takes a path), applies the
overrides, and checks every key and value. A shipped YAML states only what differs from the schema's defaults
(and from its base); `show_config` prints the fully resolved config with every key's comment from the dataclass
that defines it, and `restated_keys` finds the keys of a file that restate a default or its base's value.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import io
import json
import textwrap
import tokenize
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from audiointerp.configs import CONFIG_DIR, available_configs, config_path
from audiointerp.configs.schema import CHOICES, ExperimentConfig
from audiointerp.errors import ConfigError, closest
from audiointerp.models.registry import model_spec
from audiointerp.train.tasks import task_class

__all__ = [
    "CONFIG_DIR",
    "MIN_COUNTS",
    "POSITIVE",
    "available_configs",
    "config_path",
    "field_comments",
    "load_config",
    "restated_keys",
    "show_config",
    "to_yaml",
]

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
    return OmegaConf.merge(_read_with_base(_base_path(path, base), (*seen, path.resolve())), raw)


def _base_path(path: Path, base: Any) -> Path:
    """The file a `base:` value names: a YAML path relative to `path`'s folder, or a shipped config's name."""
    relative = path.parent / str(base)
    return relative if relative.suffix in (".yaml", ".yml") and relative.is_file() else config_path(str(base))


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


def _schema(task_name: str, task_schema: Callable[[str], type]) -> DictConfig:
    """`ExperimentConfig` with the named task's Config as its `task` section, every value at its default."""
    schema = OmegaConf.structured(ExperimentConfig)
    schema.task = OmegaConf.structured(task_schema(task_name))
    return schema


def _merge_onto(schema: DictConfig, parts: Sequence[tuple[DictConfig, str]]) -> DictConfig:
    """`parts` merged in order onto `schema`; an unknown key or a bad value raises `ConfigError` naming its origin."""
    cfg = schema
    for part, part_origin in parts:
        try:
            cfg = OmegaConf.merge(cfg, part)
        except OmegaConfBaseException as err:
            _raise_merge_error(err, schema, part_origin)
    return cfg


def _merged(
    source: str | Path | DictConfig | dict, overrides: Sequence[str], task_schema: Callable[[str], type]
) -> tuple[DictConfig, DictConfig, str]:
    """The config of `source` (with its base chain) and the overrides merged onto the schemas, not yet checked for
    missing values, choices and ranges; also the parsed overrides and where the file came from."""
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
    cfg = _merge_onto(_schema(str(task_name), task_schema), [(raw, origin), (cli, "command-line overrides")])
    return cfg, cli, origin


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
    cfg, cli, origin = _merged(source, overrides, task_schema or _default_task_schema)
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"required config values are missing in {origin}: {', '.join(missing)} (give them as key=value)")
    _check_choices(cfg)
    _check_ranges(cfg, cli, origin)
    OmegaConf.set_struct(cfg, True)
    return cfg


def read_yaml_mapping(path: str | Path, what: str, fields: str) -> dict[str, Any]:
    """The top-level mapping of a YAML file (a grid or sweep file); a ConfigError naming `what`, the file and the
    cause when it cannot be read, and naming the expected `fields` when it is not a mapping."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read {what} {str(path)!r}: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {str(path)!r}: its top level must be a mapping with {fields}")
    return data


def _check_choices(cfg: DictConfig) -> None:
    """Raise `ConfigError` when a key of `CHOICES` holds another word (a missing `???` value is left alone).

    YAML reads a bare `no` as false, which a string field stores as "False": where "no" is a choice, that is
    read back as "no" (`train.mixed_precision=no` on the command line)."""
    missing = OmegaConf.missing_keys(cfg)
    for key, allowed in CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value == "False" and "no" in allowed:
            OmegaConf.update(cfg, key, "no")
            value = "no"
        if key not in missing and value not in allowed:
            raise ConfigError(f"config key {key!r} is {value!r}{closest(str(value), allowed)}; choose one of {', '.join(allowed)}")


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


_ABSENT = object()
"""Stands for a key that a plain config dict does not hold."""


def _leaf_keys(node: dict, prefix: str = "") -> list[str]:
    """Dotted keys of the leaves of a plain nested dict; a non-empty dict is a section, not a leaf."""
    keys = []
    for key, value in node.items():
        full = f"{prefix}{key}"
        keys.extend(_leaf_keys(value, full + ".") if isinstance(value, dict) and value else [full])
    return keys


def _same(first: Any, second: Any) -> bool:
    """Whether two plain config values are the same, types included (`1`, `1.0` and `true` differ)."""
    if first is _ABSENT or second is _ABSENT:
        return first is second
    return json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)


def _lookup(node: Any, key: str) -> Any:
    """The value at a dotted key of a plain nested dict, or `_ABSENT`."""
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _ABSENT
        node = node[part]
    return node


def restated_keys(source: str | Path, task_schema: Optional[Callable[[str], type]] = None) -> list[str]:
    """The dotted keys of a config file whose value it would get anyway: the schema's default (`ExperimentConfig`'s
    sections, the task's Config for `task.*`) or the value its `base:` chain already gives.

    A file should state only what differs, each key with the comment saying why. Values are compared as the
    schema types them (`10` restates a float default of `10.0`). `task.name` picks the task's schema, so it
    counts as restated only when the base already names the same task. A `???` over a value that is set (e.g.
    `model.checkpoint: ???` over the default null) is listed too: merging keeps the set value, so it does nothing.
    """
    path = config_path(source)
    raw = _load_mapping(path)
    base = raw.pop("base", None)
    base_raw = _read_with_base(_base_path(path, base), (path.resolve(),)) if base is not None else OmegaConf.create({})
    task_name = OmegaConf.select(raw, "task.name") or OmegaConf.select(base_raw, "task.name")
    if not task_name:
        raise ConfigError(f"{path} does not name a task: set task.name (e.g. task.name=classifier)")
    schema = _schema(str(task_name), task_schema or _default_task_schema)
    reference = _merge_onto(schema, [(base_raw, f"the base of {path}")])
    resolved = _merge_onto(reference, [(raw, str(path))])
    before = OmegaConf.to_container(reference, resolve=True)
    after = OmegaConf.to_container(resolved, resolve=True)
    file_keys = OmegaConf.to_container(raw, resolve=False)
    assert isinstance(file_keys, dict)
    restated = []
    for key in _leaf_keys(file_keys):
        if key == "task.name" and OmegaConf.select(base_raw, "task.name") is None:
            continue
        if _same(_lookup(before, key), _lookup(after, key)):
            restated.append(key)
    return restated


def field_comments(cls: type) -> dict[str, str]:
    """The comment of each field of a dataclass, from its source: the `# ...` ending the field's line, followed by
    the comment-only lines right below it (a continuation), or the field's `metadata["help"]`. A field a subclass
    redeclares without a comment keeps its base class's comment."""
    return dict(_field_comments(cls))


@functools.lru_cache(maxsize=None)
def _field_comments(cls: type) -> dict[str, str]:
    """`field_comments`, parsed once per class (callers get a copy)."""
    comments: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or not dataclasses.is_dataclass(klass):
            continue
        comments.update(_own_field_comments(klass))
    for item in dataclasses.fields(cls):
        if item.metadata.get("help"):
            comments[item.name] = str(item.metadata["help"])
    return comments


def _own_field_comments(klass: type) -> dict[str, str]:
    """The trailing comments of the fields a dataclass declares itself (empty when its source is unavailable)."""
    try:
        source = textwrap.dedent(inspect.getsource(klass))
    except (OSError, TypeError):  # pragma: no cover - a class built at run time
        return {}
    line_comments: dict[int, str] = {}
    code_lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            line_comments[token.start[0]] = token.string.lstrip("#").strip()
        elif token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER):
            code_lines.update(range(token.start[0], token.end[0] + 1))
    tree = ast.parse(source)
    node = tree.body[0]
    assert isinstance(node, ast.ClassDef)
    comments = {}
    for statement in node.body:
        if not (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)):
            continue
        end = statement.end_lineno or statement.lineno
        parts = [line_comments[end]] if end in line_comments and end in code_lines else []
        line = end + 1
        while parts and line in line_comments and line not in code_lines:  # comment-only lines right below
            parts.append(line_comments[line])
            line += 1
        if parts:
            comments[statement.target.id] = " ".join(parts)
    return comments


def _class_doc(klass: type) -> str:
    """The first line of a class's own docstring ('' for none; not the signature dataclasses makes up)."""
    try:
        node = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0]
    except (OSError, TypeError):  # pragma: no cover - a class built at run time
        return ""
    doc = ast.get_docstring(node) if isinstance(node, ast.ClassDef) else None
    return doc.strip().splitlines()[0] if doc else ""


def _flow(value: Any) -> str:
    """A value as one line of YAML (flow style) that `yaml.safe_load` reads back as the same value."""
    text = yaml.safe_dump([value], default_flow_style=True, width=1 << 30, allow_unicode=True).strip()
    return text[1:-1]


def _field_default(item: dataclasses.Field) -> Any:
    """A dataclass field's default as the resolved config shows it (`???` for a required value)."""
    if item.default is not dataclasses.MISSING:
        value = item.default
    elif item.default_factory is not dataclasses.MISSING:
        value = item.default_factory()
    else:  # pragma: no cover - every schema field has a default
        return "???"
    return OmegaConf.to_container(OmegaConf.create({"v": value}), resolve=True)["v"]


def _show_lines(values: dict, klass: Optional[type], indent: str, task_class: type) -> list[tuple[str, str]]:
    """(`key: value` text, comment) lines of one mapping of the resolved config; `klass` is the dataclass that
    describes it (None below a free-form field such as `model.params`)."""
    fields = {item.name: item for item in dataclasses.fields(klass)} if klass is not None else {}
    comments = _field_comments(klass) if klass is not None else {}
    lines: list[tuple[str, str]] = []
    for key, value in values.items():
        item = fields.get(key)
        comment = comments.get(key, "")
        section: Optional[type] = None
        if key == "task" and klass is ExperimentConfig:
            section = task_class
            comment = f"the task's own section; its schema: {task_class.__module__}.{task_class.__qualname__}"
        elif item is not None and isinstance(item.default_factory, type) and dataclasses.is_dataclass(item.default_factory):
            section = item.default_factory
        if section is not None:
            lines.append((f"{indent}{_flow(key)}:", _class_doc(section) if not comment else comment))
            lines.extend(_show_lines(value, section, indent + "  ", task_class))
            continue
        if item is not None:
            default = _field_default(item)
            if default == "???":
                comment = f"(required) {comment}".strip()
            elif not _same(default, value):
                comment = f"(default: {_flow(default)}) {comment}".strip()
        if isinstance(value, dict) and value:
            lines.append((f"{indent}{_flow(key)}:", comment))
            lines.extend(_show_lines(value, None, indent + "  ", task_class))
        else:
            lines.append((f"{indent}{_flow(key)}: {_flow(value)}", comment))
    return lines


def show_config(
    source: str | Path,
    overrides: Sequence[str] = (),
    task_schema: Optional[Callable[[str], type]] = None,
) -> str:
    """The fully resolved config of a shipped config (or a YAML path) with `key=value` overrides, as YAML text:
    every key of the schemas, each followed by its comment from the dataclass that defines it, marked
    `(default: X)` where the value differs from that default and `(required)` where the schema has no default
    (`???`: the value must be given). Required values not given show as `???`.

    The text parses back (`yaml.safe_load`) to the resolved config. Unknown keys, bad types and values outside
    `CHOICES` or their bounds raise `ConfigError` as in `load_config`; missing required values do not.
    """
    task_schema = task_schema or _default_task_schema
    cfg, cli, origin = _merged(source, overrides, task_schema)
    _check_choices(cfg)
    _check_ranges(cfg, cli, origin)
    values = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(values, dict)
    lines = _show_lines(values, ExperimentConfig, "", task_schema(str(cfg.task.name)))
    width = min(max(len(text) for text, _ in lines), 48)
    given = f" + {' '.join(overrides)}" if overrides else ""
    header = [
        f"# {source if str(source) == origin else f'{source} ({origin})'}{given}, fully resolved: every key with its comment from the schema;",
        "# (default: X) marks a value that differs from the schema's default, (required) a value that must be given.",
    ]
    body = [f"{text.ljust(width)}  # {comment}" if comment else text for text, comment in lines]
    return "\n".join(header + body) + "\n"
