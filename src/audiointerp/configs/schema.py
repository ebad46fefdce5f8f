"""Typed schemas of an experiment config.

An experiment YAML is merged onto these dataclasses, so every key is checked: an unknown key is an error
naming the key and the closest valid one, a value of the wrong type is an error, and `???` marks a value that
must be given (no silent default). The `task` section's schema is the task's own `Config` dataclass.

The defaults live here (and in the task Configs) only: a shipped YAML states just what differs, each key with a
comment saying why (`tests/configs/test_config_yaml.py` fails on a restated default). The trailing `# comment` of
each field is its help text: `audiointerp configs show NAME` prints the fully resolved config with these comments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING


@dataclass
class DataConfig:
    """Where the audio comes from and how it is cut."""

    source: str = MISSING  # manifest CSV, or the root of an ESC-50 / UrbanSound8K / FSD50K / MSOS tree
    format: str = "auto"  # auto | manifest | esc50 | urbansound8k | fsd50k | msos
    label_column: str = "label"  # "label", or a factor column of the manifest (e.g. "material")
    multi_label: bool = False  # multi-hot targets from ";"-joined labels
    classes: Optional[list[str]] = None  # null: the sorted labels of the whole manifest
    sample_rate: int = 16000  # Hz; audio is resampled to this rate on load
    channels: int = 1  # 1 mono (channel mean) or 2 stereo
    seconds: float = 1.0  # clip length: random crop when training, crop from the start when evaluating
    # (the semantic and cae tasks evaluate whole clips, every 0.96 s example, whatever this says)
    train_folds: list[str] = field(default_factory=lambda: ["2", "3", "4", "5"])  # folds used for training
    valid_folds: list[str] = field(default_factory=lambda: ["1"])  # folds used for validation (best checkpoint)
    test_folds: list[str] = field(default_factory=list)  # held-out folds: the best checkpoint is scored on them at the end
    valid_fraction: float = 0.2  # a manifest without a fold column: the share of each class held out for validation (deterministic, stratified by data.label_column; no test split)
    allow_duplicates: bool = False  # a file may be listed more than once on purpose (repeats, several labels); never in two splits
    cache: bool = True  # decode and resample once into a memory-mapped cache
    cache_dir: Optional[str] = None  # null: $AUDIOINTERP_CACHE or ~/.cache/audiointerp
    on_error: str = "raise"  # raise | skip: what a missing, corrupt or empty file does
    batch_size: int = 32  # per process
    eval_batch_size: int = 64  # per process
    num_workers: int = 0  # DataLoader worker processes (they persist over epochs)
    prefetch_factor: int = 2  # batches each worker prepares ahead (with num_workers > 0)


@dataclass
class ModelConfig:
    """Which network of the zoo, and its front end."""

    name: str = MISSING  # a registered model name (`audiointerp.models.available_models()`)
    params: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the model's builder
    checkpoint: Optional[str] = None  # local weights to start from (.safetensors, .pt, .pth, .bin)
    frontend: Optional[str] = None  # null: the model's own front end
    frontend_params: dict[str, Any] = field(default_factory=dict)  # overrides of the front end's defaults


@dataclass
class OptimConfig:
    """Optimiser and learning-rate schedule. Schedules count optimizer updates (after accumulation)."""

    name: str = "adamw"  # adam | adamw | sgd
    lr: float = 1e-3  # peak learning rate
    weight_decay: float = 0.0  # decoupled for adamw, L2 for adam/sgd
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adam/adamw
    momentum: float = 0.9  # sgd
    scheduler: str = "cosine"  # constant | cosine | linear | exp_warmup_linear_down (EfficientAT, in epochs)
    warmup_steps: int = 0  # linear warm-up, in optimizer updates (constant, cosine, linear)
    min_lr_ratio: float = 0.0  # final lr as a fraction of lr (cosine, linear)
    warmup_epochs: float = 10.0  # exp_warmup_linear_down: exponential warm-up length
    rampdown_start_epoch: float = 10.0  # exp_warmup_linear_down: epoch the linear ramp-down starts
    rampdown_epochs: float = 65.0  # exp_warmup_linear_down: ramp-down length
    last_lr_ratio: float = 0.01  # exp_warmup_linear_down: final lr as a fraction of lr
    grad_clip: Optional[float] = 1.0  # max global gradient norm; null disables clipping


@dataclass
class TrainConfig:
    """The loop: length, precision, seeding, checkpointing, resuming."""

    epochs: int = 10  # passes over the training data
    max_steps: Optional[int] = None  # stop after this many optimizer updates, if sooner than `epochs`
    gradient_accumulation_steps: int = 1  # batches per optimizer update
    mixed_precision: str = "no"  # no | fp16 | bf16: networks under autocast; front ends and losses stay float32
    compile: bool = False  # torch.compile the task's networks in place (checkpoint keys stay plain)
    compile_backend: str = "inductor"  # torch.compile backend (inductor; aot_eager or eager to debug)
    seed: int = 0  # seeds python, numpy, torch, the sampler and the crops
    eval_every_epochs: int = 1  # validate every N epochs (and after the last)
    log_every_steps: int = 10  # log training scalars every N optimizer updates
    checkpoint_every_steps: Optional[int] = None  # also checkpoint mid-epoch every N updates
    keep_last: int = 2  # checkpoints kept, besides the best
    best_metric: str = "valid/loss"  # metric that selects the `best` checkpoint (valid/swa_<metric> with swa)
    swa: bool = False  # stochastic weight averaging: also keep, score and checkpoint the mean of epochs' weights
    swa_start_epoch: int = 1  # the first epoch (1-based) whose end-of-epoch weights enter the mean
    swa_end_epoch: Optional[int] = None  # the last one (null: the final epoch; PaSST's recipe: epochs - 1)
    best_mode: str = "min"  # min | max
    resume: str = "auto"  # auto: continue this run's latest checkpoint | never | path of a checkpoint
    force_unlock: bool = False  # take over a run lock recorded on another host (or by a running pid not holding it)
    cpu: bool = False  # force the CPU even when GPUs are visible
    progress: bool = True  # progress bars (main process only)


@dataclass
class TrackingConfig:
    """Experiment tracking. Every scalar also goes to the run's metrics.jsonl whatever the backend."""

    backend: str = "wandb"  # wandb | none
    mode: str = "auto"  # auto (online when logged in, else offline) | online | offline
    project: str = "audiointerp"  # W&B project
    group: Optional[str] = None  # W&B group, so related experiments share a dashboard view; null: the experiment
    entity: Optional[str] = None  # W&B team or user; null: your default
    tags: list[str] = field(default_factory=list)  # extra tags; family, model and dataset are added
    notes: Optional[str] = None  # W&B run notes
    condition: Optional[str] = None  # the grid condition of the run ('optim.lr=0.01, ...'; set by audiointerp grid)
    log_checkpoints: str = "best"  # best | all | none: checkpoints uploaded as model artifacts
    audio_examples: int = 8  # validation clips logged as a wandb.Table of audio


@dataclass
class ExperimentConfig:
    """One experiment: a task on a model and a dataset, trained and tracked."""

    experiment: str = MISSING  # name: the run directory runs/<experiment>/ and the W&B group
    task: Any = MISSING  # the task section; its schema is the task's Config (see `audiointerp.train.tasks`)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    output_dir: str = "runs"  # runs go to <output_dir>/<experiment>/<run_id>/
    run_id: Optional[str] = None  # null: a new id, or the latest unfinished run's with resume=auto


CHOICES: dict[str, tuple[str, ...]] = {
    "data.format": ("auto", "manifest", "esc50", "urbansound8k", "fsd50k", "msos"),
    "data.on_error": ("raise", "skip"),
    "optim.name": ("adam", "adamw", "sgd"),
    "optim.scheduler": ("constant", "cosine", "linear", "exp_warmup_linear_down"),
    "train.mixed_precision": ("no", "fp16", "bf16"),
    "train.best_mode": ("min", "max"),
    "tracking.backend": ("wandb", "none"),
    "tracking.mode": ("auto", "online", "offline"),
    "tracking.log_checkpoints": ("best", "all", "none"),
}
"""Keys whose value must be one of a few words."""
