"""Experiment configs as data: one YAML per experiment, shipped here, and the typed schemas (`schema.py`).

Loading (base files, `key=value` overrides, validation against the schemas and the task's Config) is
`audiointerp.train.config.load_config`; this package only holds and finds the files.
"""

from __future__ import annotations

from pathlib import Path

from audiointerp.errors import ConfigError, closest

CONFIG_DIR = Path(__file__).resolve().parent

__all__ = ["CONFIG_DIR", "available_configs", "config_path"]


def available_configs() -> list[str]:
    """Names of the experiment configs shipped with the package."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def config_path(source: str | Path) -> Path:
    """A config file from a path or from the name of a shipped config."""
    path = Path(source)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        return path
    shipped = CONFIG_DIR / f"{source}.yaml"
    if shipped.is_file():
        return shipped
    names = available_configs()
    raise ConfigError(f"no config named {str(source)!r}{closest(str(source), names)}; shipped configs: {', '.join(names)}")


