"""The `audiointerp` command: synth, train, grid, sweep, agent, evaluate, export, extract, analyze, compare, listen,
quickstart, weights, data, and listings.

Heavy libraries are imported inside each command, so `audiointerp --help` answers at once. The options of
`extract` and of every `analyze NAME` are built from their Settings dataclasses (`settings_arguments`), on first
use of that command (`LazyParser`).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from collections import abc
from pathlib import Path
from types import ModuleType, UnionType
from typing import Any, Callable, Optional, Sequence, Union, get_args, get_origin, get_type_hints

from audiointerp.errors import ConfigError


def _synth(args: argparse.Namespace) -> int:
    from audiointerp.datasets.synth import synthesize

    manifest = synthesize(args.out_dir, clips_per_class=args.clips_per_class, sample_rate=args.sample_rate,
                          seconds=args.seconds, seed=args.seed, progress=not args.quiet)
    print(f"wrote {manifest}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from audiointerp.train.config import load_config
    from audiointerp.train.trainer import Trainer

    result = Trainer(load_config(args.config, args.overrides)).fit()
    print(f"run directory: {result.run_dir}")
    return 0


def _grid(args: argparse.Namespace) -> int:
    from audiointerp.train.grid import GridSpec, combine, parse_seeds, read_grid_file, run_grid

    spec = read_grid_file(args.grid_file) if args.grid_file else GridSpec()
    seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    if seeds is not None and not seeds:
        raise ConfigError(f"--seeds {args.seeds!r} names no seed; give a comma-separated list such as 0,1,2")
    spec = combine(spec, args.vary or [], seeds, args.name, args.overrides)
    result = run_grid(args.config, spec.vary, spec.seeds or [0], spec.name, spec.overrides, parallel=args.parallel)
    print(f"grid folder: {result.folder}")
    if result.failed:
        print(f"audiointerp grid: {len(result.failed)} of {len(result.runs)} runs failed:", file=sys.stderr)
        for run in result.failed:
            print(f"  {Path(run.run_dir).name} (exit status {run.exit_status}): see {run.log}", file=sys.stderr)
        return 1  # runs failed (bad input is 2)
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from audiointerp.train.sweep import create_sweep

    path = create_sweep(args.config, args.sweep_file, args.overrides, project=args.project, entity=args.entity)
    print(f"sweep: {path}\nrun trials with: audiointerp agent {path}")
    return 0


def _agent(args: argparse.Namespace) -> int:
    from audiointerp.train.sweep import run_agent

    failed = run_agent(args.sweep_id, count=args.count, launch=args.launch, project=args.project, entity=args.entity)
    for line in failed:
        print(f"audiointerp agent: trial failed: {line}", file=sys.stderr)
    return 1 if failed else 0  # trials failed (bad input is 2)


def _evaluate(args: argparse.Namespace) -> int:
    from audiointerp.train.evaluate import compare, evaluate

    datas = args.data or [None]
    if len(args.sources) > 1 or len(datas) > 1:
        rows = compare(args.sources, datas, args.out or Path("comparison"), data_format=args.format,
                       checkpoint=args.checkpoint, batch_size=args.batch_size, settings=args.set or ())
        print((Path(args.out or "comparison") / "comparison.md").read_text(), end="")
        return 0 if rows else 1
    result = evaluate(args.sources[0], data=datas[0], data_format=args.format, folds=args.folds,
                      checkpoint=args.checkpoint, out_dir=args.out, batch_size=args.batch_size, settings=args.set or ())
    notes = result.notes
    folds = f", folds {' '.join(notes['folds'])}" if notes.get("folds") else ""
    print(f"set: {notes.get('set', '?')} ({notes.get('source', '?')}{folds})")
    for key, value in (notes.get("resolved") or {}).items():
        print(f"{key}: {value}")
    width = max(len(k) for k in result.metrics)
    for key, value in result.metrics.items():
        print(f"{key:<{width}}  {value:.4f}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from audiointerp.train.export import export_run

    print(f"exported to {export_run(args.run_dir, out=args.out, checkpoint=args.checkpoint, swa=args.swa)}")
    return 0


# Every `audiointerp analyze NAME`: its module (see `audiointerp.analysis.command`) and its one-line help. The
# command's arguments come from the module's `INPUTS` and `Settings`, so a new analysis is a module and a line here.
ANALYSES: dict[str, tuple[str, str]] = {
    "decode": ("audiointerp.analysis.decode", "per-layer KNN decoding of factors (PCA 64, k 10, 10-fold CV, t-tests)"),
    "manipulate": ("audiointerp.analysis.manipulate", "move a factor's coordinate in a flow's code and measure the "
                   "network's outputs (Dick et al. Fig. 2)"),
    "rsa": ("audiointerp.analysis.rsa", "per-layer RSA of stores against target RDMs, blockwise, bootstrap intervals"),
    "probe": ("audiointerp.analysis.probe", "linear probes per layer (L2 logistic regression, C by inner CV), with transfer"),
    "concepts": ("audiointerp.analysis.concepts", "sparse non-negative concept decompositions of stored embeddings (SpLiCE)"),
    "compare": ("audiointerp.analysis.compare", "runs' final metrics per condition over seeds: mean, 95 % interval, "
                "paired t-tests"),
}


class LazyParser(argparse.ArgumentParser):
    """A parser whose arguments are added by `fill` on first use (parsing or help), so that building the whole
    command tree imports no analysis module and `audiointerp --help` answers at once."""

    def __init__(self, *args: Any, fill: Optional[Callable[[argparse.ArgumentParser], None]] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fill = fill

    def filled(self) -> LazyParser:
        """This parser with its arguments added."""
        if self._fill is not None:
            fill, self._fill = self._fill, None
            fill(self)
        return self

    def parse_known_args(self, args: Optional[Sequence[str]] = None, namespace: Optional[argparse.Namespace] = None,
                         ) -> tuple[argparse.Namespace, list[str]]:
        """Fill, then parse as argparse does (a subcommand's parser is called here)."""
        return super(LazyParser, self.filled()).parse_known_args(args, namespace)

    def format_help(self) -> str:
        """Fill, then the help as argparse writes it."""
        return super(LazyParser, self.filled()).format_help()

    def format_usage(self) -> str:
        """Fill, then the usage line as argparse writes it."""
        return super(LazyParser, self.filled()).format_usage()


def _shape(hint: Any) -> tuple[Any, bool, bool]:
    """(the item type, whether the hint is a sequence or mapping, whether None is allowed) of a Settings field's type."""
    optional = False
    if get_origin(hint) in (Union, UnionType):
        members = [a for a in get_args(hint) if a is not type(None)]
        optional, hint = len(members) < len(get_args(hint)), members[0]
    origin = get_origin(hint)
    if origin in (list, tuple, abc.Sequence):
        return get_args(hint)[0], True, optional
    if origin in (dict, abc.Mapping):
        return str, True, optional
    return hint, False, optional


def _default(item: dataclasses.Field[Any]) -> Any:
    """A field's default value (a fresh one from its factory), or MISSING."""
    if item.default_factory is not dataclasses.MISSING:
        return item.default_factory()
    return item.default


def settings_arguments(parser: argparse.ArgumentParser, settings_type: type) -> None:
    """An option per field of the dataclass `settings_type`, from its type, default and `metadata` (`help`,
    `flag`, `many`, `choices`, `metavar`, `required`; see `audiointerp.analysis.command`)."""
    hints = get_type_hints(settings_type)
    for item in dataclasses.fields(settings_type):
        meta = item.metadata
        if "help" not in meta:
            raise TypeError(f"{settings_type.__qualname__}.{item.name} has no help in its metadata")
        kind, sequence, _ = _shape(hints[item.name])
        default = _default(item)
        flag = meta.get("flag", "--" + item.name.replace("_", "-"))
        options: dict[str, Any] = {"dest": item.name, "help": meta["help"].replace("%", "%%")}
        if kind is not bool and ("metavar" in meta or "choices" not in meta):  # the flag's name (--factor FACTOR)
            options["metavar"] = meta.get("metavar", flag.lstrip("-").replace("-", "_").upper())
        if "choices" in meta:
            options["choices"] = tuple(meta["choices"])
        if default is dataclasses.MISSING or meta.get("required"):
            options["required"] = True
        elif default not in (None, False, [], {}, ()):
            shown = " ".join(map(str, default)) if sequence else default
            options["help"] += f" (default: {shown})"
        if kind is bool and not sequence:
            options["action"] = argparse.BooleanOptionalAction if default is True else "store_true"
        elif sequence and meta.get("many") == "append":
            options.update(action="append", type=str if "convert" in meta else kind)
        elif sequence and meta.get("many") == "+":
            options.update(nargs="+", type=kind)
        elif sequence and meta.get("many") != "comma":
            raise TypeError(f"{settings_type.__qualname__}.{item.name}: a sequence needs many = append, + or comma")
        elif not sequence:
            options["type"] = kind
        parser.add_argument(flag, **options)


def settings_from_args(settings_type: type, args: argparse.Namespace) -> Any:
    """The `settings_type` dataclass from arguments parsed by `settings_arguments`: comma-separated values split,
    `convert` applied, and an option not given at the field's default."""
    hints = get_type_hints(settings_type)
    values: dict[str, Any] = {}
    for item in dataclasses.fields(settings_type):
        value, meta = getattr(args, item.name), item.metadata
        if value is None:
            continue  # the field's own default
        kind, _, optional = _shape(hints[item.name])
        if meta.get("many") == "comma":
            value = [kind(part.strip()) for part in value.split(",") if part.strip()]
            if not value and optional:
                continue
        if "convert" in meta:
            value = meta["convert"](value)
        values[item.name] = value
    return settings_type(**values)


def analysis_module(name: str) -> ModuleType:
    """The module of `audiointerp analyze NAME` (imported now)."""
    return importlib.import_module(ANALYSES[name][0])


def _fill_analysis(name: str) -> Callable[[argparse.ArgumentParser], None]:
    """Adds the analysis' inputs, its Settings' options and the options every analysis shares."""

    def fill(p: argparse.ArgumentParser) -> None:
        module = analysis_module(name)
        p.description = (module.__doc__ or "").split("\n\n")[0]
        for item in module.INPUTS:
            p.add_argument(item.name, type=Path, nargs="+" if item.many else None, help=item.help)
        settings_arguments(p, module.Settings)
        p.add_argument("--out", type=Path, help=f"output folder (default: {module.DEFAULT_OUT})")
        p.add_argument("--tracking", choices=("wandb", "none"), default="wandb", help="W&B run (job type analysis) or none")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        p.set_defaults(func=_analyze, analysis=name)

    return fill


def _analyze(args: argparse.Namespace) -> int:
    module = analysis_module(args.analysis)
    settings = settings_from_args(module.Settings, args)
    inputs = [getattr(args, item.name) for item in module.INPUTS]
    print(module.summary(module.run(settings, *inputs, out=args.out, tracking=args.tracking, progress=not args.quiet)))
    return 0


def _fill_extract(p: argparse.ArgumentParser) -> None:
    from audiointerp.analysis.extraction import ExtractSettings

    settings_arguments(p, ExtractSettings)
    p.add_argument("--out", required=True, type=Path, help="the store folder (an unfinished one is resumed)")
    p.add_argument("--batch-size", type=int, default=16, help="clips per forward pass (default: 16)")
    p.add_argument("--force-unlock", action="store_true",
                   help="take over a shard lock recorded by another host (a shared file system) once you are sure "
                        "that writer has ended; a lock held by a running writer is never taken")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_extract)


def _extract(args: argparse.Namespace) -> int:
    from audiointerp.analysis.extraction import ExtractSettings, extract

    settings = settings_from_args(ExtractSettings, args)
    print(f"wrote {extract(settings, args.out, batch_size=args.batch_size, progress=not args.quiet, force_unlock=args.force_unlock)}")
    return 0


def _listen(args: argparse.Namespace) -> int:
    from audiointerp.evaluation.listening import listening_page

    print(f"wrote {listening_page(args.exports, args.out, labels=args.label)}")
    return 0


def _quickstart(args: argparse.Namespace) -> int:
    from audiointerp.quickstart import run_quickstart

    run_quickstart(Path(args.out), overrides=args.overrides, tracking=args.tracking, workers=args.workers)
    return 0


def _list_models(args: argparse.Namespace) -> int:
    from audiointerp.models import available_models

    print("\n".join(available_models()))
    return 0


def _list_configs(args: argparse.Namespace) -> int:
    from audiointerp.configs import available_configs

    print("\n".join(available_configs()))
    return 0


def _show_config(args: argparse.Namespace) -> int:
    from audiointerp.train.config import show_config

    text = show_config(args.config, args.overrides)
    print(text, end="" if text.endswith("\n") else "\n")
    return 0


def _weights_list(args: argparse.Namespace) -> int:
    import json

    from audiointerp.downloads import CATALOG

    entries = [CATALOG[name] for name in sorted(CATALOG)]
    if args.json:
        print(json.dumps([e.to_json() for e in entries], indent=1))
        return 0
    rows = [("name", "model", "classes", "source", "file", "licence")]
    rows += [(e.name, e.model or "-", str(e.num_classes or "-"), e.source, e.file or f"({e.hub_repo})",
              e.licence.split(" (")[0]) for e in entries]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def _weights_fetch(args: argparse.Namespace) -> int:
    from audiointerp.downloads import cached_path, weights_entry
    from audiointerp.errors import DownloadError
    from audiointerp.models.registry import fetch_checked

    if args.sha256 and len(args.names) != 1:
        raise ValueError("--sha256 pins one file's hash: give one NAME with it")
    status = 0
    for name in args.names:
        entry = weights_entry(name)
        if entry.manual and not cached_path(entry).is_file():  # no direct download: say where to get it and where to put it
            print(f"{name}: no direct download. Get {entry.file} from {entry.manual}\n  and put it at "
                  f"{cached_path(entry)}", file=sys.stderr)
            status = 1
            continue
        try:
            print(fetch_checked(name, sha256=args.sha256, progress=not args.quiet))
        except DownloadError as err:
            if len(args.names) == 1:
                raise
            print(f"audiointerp weights fetch: error: {err}", file=sys.stderr)
            status = 2
    return status


def _weights_verify(args: argparse.Namespace) -> int:
    from audiointerp.downloads import verify_weights
    from audiointerp.models.registry import weights_validator

    results = verify_weights(weights_validator, args.names or None)
    for item in results:
        print(f"{'ok  ' if item.ok else 'FAIL'}  {item.name}  {item.path}  {item.message}")
    if not results:
        print("no catalog weights in the cache")
    return 0 if all(item.ok for item in results) else 1


def _weights_path(args: argparse.Namespace) -> int:
    from audiointerp.downloads import cached_path, weights_entry
    from audiointerp.downloads.weights_catalog import hub_local

    entry = weights_entry(args.name)
    path = hub_local(entry) if entry.hub_repo else cached_path(entry)
    if path is None or not path.exists():
        if path is not None:
            print(path)
        print(f"audiointerp weights path: {args.name} is not in the cache yet (`audiointerp weights fetch "
              f"{args.name}`)", file=sys.stderr)
        return 1
    print(path)
    return 0


def _data_list(args: argparse.Namespace) -> int:
    import json

    from audiointerp.downloads.data_catalog import CATALOG

    entries = [CATALOG[name] for name in sorted(CATALOG)]
    if args.json:
        print(json.dumps([e.to_json() for e in entries], indent=1))
        return 0
    for e in entries:
        print(f"{e.name}  {e.url}  {e.licence}")
    return 0


def _data_fetch(args: argparse.Namespace) -> int:
    from audiointerp.downloads import data_entry, fetch_data

    entry = data_entry(args.name)
    print(f"{entry.name}: licence {entry.licence}", file=sys.stderr)
    folder = fetch_data(args.name, args.dir, progress=not args.quiet)
    print(folder)
    print(f"use it as data.source={folder} (or data.source=data:{entry.name})", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="audiointerp", description="Train sound-to-event networks and open them up.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=LazyParser)

    p = sub.add_parser("synth", help="write the built-in synthetic impact-sound data set")
    p.add_argument("out_dir", type=Path, help="folder for audio/ and manifest.csv")
    p.add_argument("--clips-per-class", type=int, default=40, help="clips for each of the 24 material x action classes")
    p.add_argument("--sample-rate", type=int, default=16000, help="Hz")
    p.add_argument("--seconds", type=float, default=1.0, help="clip length")
    p.add_argument("--seed", type=int, default=0, help="the same seed gives the same files")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_synth)

    p = sub.add_parser("train", help="train one experiment config (accelerate launch / torchrun for several GPUs)")
    p.add_argument("config", help="a shipped config name (see `audiointerp configs`) or a YAML path")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.epochs=5 data.source=...")
    p.set_defaults(func=_train)

    p = sub.add_parser("grid", help="run the product of varied config values over seeds as ordinary runs "
                       "(compare them with `audiointerp compare GRID_FOLDER`)")
    p.add_argument("config", help="a shipped config name or a YAML path")
    p.add_argument("overrides", nargs="*", help="key=value overrides shared by every run")
    p.add_argument("--vary", action="append", metavar="KEY=JSON_LIST",
                   help="a key and its values as a JSON list, repeatable, e.g. --vary 'optim.lr=[0.001, 0.01]'")
    p.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2 (default: the grid file's, else 0)")
    p.add_argument("--name", help="the grid's name: its folder <output_dir>/grids/NAME and W&B group (default: the "
                   "grid file's, else CONFIG-grid)")
    p.add_argument("--grid-file", type=Path, metavar="GRID.yaml",
                   help="a YAML file with vary (key: [values]), seeds, name and overrides; the command line adds "
                        "--vary keys and overrides, and its --seeds and --name replace the file's")
    p.add_argument("--parallel", type=int, default=1, metavar="N",
                   help="run up to N runs at once as child processes, one per GPU (CUDA_VISIBLE_DEVICES), or N CPU "
                        "processes without GPUs; a failed run is reported with its log and the others go on; the "
                        "exit status is 1 when a run failed, 2 for bad input (default: 1, one after another in this process)")
    p.set_defaults(func=_grid)

    p = sub.add_parser("sweep", help="create a W&B sweep over config keys from a sweep file (trials run with "
                       "`audiointerp agent`)")
    p.add_argument("config", help="a shipped config name or a YAML path: the base config of every trial")
    p.add_argument("sweep_file", type=Path, metavar="SWEEP.yaml",
                   help="W&B sweep format (method, metric, parameters) whose parameter names are config keys")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the base config")
    p.add_argument("--project", help="W&B project (default: the config's tracking.project)")
    p.add_argument("--entity", help="W&B team or user (default: the config's tracking.entity, else yours)")
    p.set_defaults(func=_sweep)

    p = sub.add_parser("agent", help="run trials of a W&B sweep made by `audiointerp sweep`, through the trainer")
    p.add_argument("sweep_id", metavar="SWEEP_ID", help="ENTITY/PROJECT/ID as `audiointerp sweep` prints it (or an ID "
                   "with --project)")
    p.add_argument("--count", type=int, help="run at most this many trials (default: until the sweep ends)")
    p.add_argument("--launch", metavar="LAUNCHER", help="run each trial under this launcher, e.g. --launch "
                   "'accelerate launch --num_processes 2' (default: in this process)")
    p.add_argument("--project", help="W&B project of the sweep when SWEEP_ID is only an ID")
    p.add_argument("--entity", help="W&B team or user of the sweep when SWEEP_ID does not name it")
    p.set_defaults(func=_agent)

    p = sub.add_parser("evaluate", help="evaluate runs or exports on any dataset, without retraining")
    p.add_argument("sources", type=Path, nargs="+", metavar="SOURCE",
                   help="run or export directories; several (or several --data) write a comparison table and figures")
    p.add_argument("--data", action="append", help="manifest CSV or dataset root, repeatable (default: the run's validation folds)")
    p.add_argument("--format", default="auto", help="auto | manifest | esc50 | urbansound8k | fsd50k | msos")
    p.add_argument("--folds", nargs="*", help="only these folds of --data")
    p.add_argument("--checkpoint", default="best", help="best | last | a step number | a checkpoint folder")
    p.add_argument("--out", type=Path, help="output folder (default: RUN/eval/<data name>; ./comparison for comparisons)")
    p.add_argument("--batch-size", type=int, help="per process (default: the run's data.eval_batch_size)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="change an evaluation setting (task.* / data.*), e.g. --set task.macro_column=label for MSOS")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("export", help="export a run's weights, config, labels and metrics for analysis")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--out", type=Path, help="export folder (default: RUN_DIR/export)")
    p.add_argument("--checkpoint", help="best | last | a step number | a checkpoint folder (default: best; last with --swa)")
    p.add_argument("--swa", action="store_true", help="export the averaged weights (runs with train.swa)")
    p.set_defaults(func=_export)

    sub.add_parser("extract", help="write layer activations of a model over a data set to an activation store",
                   fill=_fill_extract)

    analyze = sub.add_parser("analyze", help="analyses of an activation store").add_subparsers(
        dest="analysis", required=True, metavar="ANALYSIS")
    for name, (_, line) in ANALYSES.items():
        analyze.add_parser(name, help=line.replace("%", "%%"), fill=_fill_analysis(name))
    sub.add_parser("compare", help="runs' or grids' final metrics per condition over seeds: mean, 95 %% interval, "
                   "paired t-tests (the same as `analyze compare`)", fill=_fill_analysis("compare"))

    p = sub.add_parser("listen", help="one page of originals and each autoencoder export's reconstructions")
    p.add_argument("exports", nargs="+", type=Path, help="export folders of ae_finetune or reconstruction runs")
    p.add_argument("--out", type=Path, default=Path("listening"), help="folder of report.html (default: listening)")
    p.add_argument("--label", action="append", help="a column name per export, in order (default: the classifier)")
    p.set_defaults(func=_listen)

    p = sub.add_parser("quickstart", help="the main job: synthesize data, train, evaluate, export, report")
    p.add_argument("--out", default="runs/quickstart", help="folder of the quickstart's data, runs and report")
    p.add_argument("--workers", type=int, default=2, help="stages run side by side in this many processes (1: in turn)")
    p.add_argument("--tracking", default="wandb", choices=("wandb", "none"), help="W&B (offline unless logged in) or none")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the classifier stage's config")
    p.set_defaults(func=_quickstart)

    p = sub.add_parser("weights", help="released weights by name: list, fetch, verify, path (weights:NAME anywhere a "
                       "checkpoint is taken)")
    actions = p.add_subparsers(dest="weights_action", metavar="ACTION", required=True)
    q = actions.add_parser("list", help="the catalog of released weights")
    q.add_argument("--json", action="store_true", help="a JSON list of objects (name, model, url, hub_repo, file, "
                   "num_classes, licence, paper, ...)")
    q.set_defaults(func=_weights_list)
    q = actions.add_parser("fetch", help="download into the cache ($AUDIOINTERP_WEIGHTS), check, and print the path")
    q.add_argument("names", nargs="+", metavar="NAME")
    q.add_argument("--sha256", metavar="HEX", help="pin the file's sha256 (one NAME)")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=_weights_fetch)
    q = actions.add_parser("verify", help="recompute every cached file's sha256 against hashes.json and load it into "
                           "its zoo model")
    q.add_argument("names", nargs="*", metavar="NAME", help="only these (default: every cached entry)")
    q.set_defaults(func=_weights_verify)
    q = actions.add_parser("path", help="the local path of a cached entry (exit status 1 when not fetched yet)")
    q.add_argument("name", metavar="NAME")
    q.set_defaults(func=_weights_path)

    p = sub.add_parser("data", help="data sets by name: list, fetch (data.source=data:NAME)")
    actions = p.add_subparsers(dest="data_action", metavar="ACTION", required=True)
    q = actions.add_parser("list", help="the fetchable data sets")
    q.add_argument("--json", action="store_true", help="a JSON list of objects (name, url, file, ...)")
    q.set_defaults(func=_data_list)
    q = actions.add_parser("fetch", help="download, verify and unpack a data set; print the folder for data.source")
    q.add_argument("name", metavar="NAME")
    q.add_argument("--dir", type=Path, help="put it in this folder (default: the cache, $AUDIOINTERP_DATA)")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=_data_fetch)

    p = sub.add_parser("models", help="list the model zoo")
    p.set_defaults(func=_list_models)
    p = sub.add_parser("configs", help="list the shipped experiment configs (configs show NAME: one resolved, commented)")
    p.set_defaults(func=_list_configs)
    actions = p.add_subparsers(dest="configs_action", metavar="ACTION")
    actions.add_parser("list", help="the shipped experiment configs (the default)").set_defaults(func=_list_configs)
    q = actions.add_parser("show", help="a config fully resolved, every key with its comment and default")
    q.add_argument("config", help="a shipped config name or a YAML path")
    q.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.epochs=5")
    q.set_defaults(func=_show_config)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from audiointerp.errors import AudioInterpError, write_failure_cause

    try:
        return int(args.func(args) or 0)
    except (AudioInterpError, ValueError, KeyError, FileExistsError, FileNotFoundError) as err:
        # bad input of any kind: one line naming the cause (tracebacks are for bugs)
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"audiointerp {args.command}: error: {message}", file=sys.stderr)
        return 2
    except OSError as err:  # a write that no command named: a full, read-only or unwritable disk is still one line
        cause = write_failure_cause(err, err.filename or ".")
        if cause is None:
            raise
        print(f"audiointerp {args.command}: error: cannot write {err.filename or 'a file'}: {cause}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
