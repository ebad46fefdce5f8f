"""The model zoo: networks, front ends, and `build(name, num_classes=..., checkpoint=PATH)`."""

from audiointerp.models.frontends import AudioPipeline, LogMel
from audiointerp.models.registry import (
    LoadReport,
    ModelSpec,
    available_frontends,
    available_models,
    build,
    build_frontend,
    build_pipeline,
    load_weights,
    read_state_dict,
    register_frontend,
    register_model,
)

__all__ = [
    "AudioPipeline",
    "LogMel",
    "LoadReport",
    "ModelSpec",
    "available_frontends",
    "available_models",
    "build",
    "build_frontend",
    "build_pipeline",
    "load_weights",
    "read_state_dict",
    "register_frontend",
    "register_model",
]
