"""The `audiointerp` command: synth, train, evaluate, export, extract, listen, quickstart, and listings.

Heavy libraries are imported inside each command, so `audiointerp --help` answers at once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence


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

    print(f"exported to {export_run(args.run_dir, out=args.out, checkpoint=args.checkpoint)}")
    return 0


def _extract(args: argparse.Namespace) -> int:
    from audiointerp.analysis import ExtractSettings, extract

    settings = ExtractSettings(model=args.model, data=args.data, layers=[x for x in args.layers.split(",") if x.strip()],
                               dtype=args.dtype, pooling=args.pooling, window=args.window, offset=args.offset,
                               flatten=args.flatten, chunk_size=args.chunk_size, data_format=args.format,
                               folds=args.folds, checkpoint=args.checkpoint, num_classes=args.num_classes)
    print(f"wrote {extract(settings, args.out, batch_size=args.batch_size, progress=not args.quiet, force_unlock=args.force_unlock)}")
    return 0


def _analyze_decode(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from audiointerp.analysis import ActivationStore
    from audiointerp.analysis.decode import DecodeSettings, decode, track_decoding, write_decoding

    store = ActivationStore(args.store)
    settings = DecodeSettings(factors=args.factor, layers=args.layers.split(",") if args.layers else None,
                              instances=args.instances, components=args.components, neighbors=args.neighbors,
                              folds=args.folds, seed=args.seed)
    result = decode(store, settings, progress=not args.quiet)
    layers = list(settings.layers or store.layers)
    out = Path(args.out or Path(args.store) / "decoding")
    write_decoding(result, layers, out)
    track_decoding(result, layers, out, f"decode-{Path(args.store).name}", asdict(settings), args.tracking)
    for factor in settings.factors:
        means = ", ".join(f"{layer} {result.scores[factor][layer].mean():.3f}" for layer in layers)
        print(f"{factor}: best {result.best[factor]}; {means}")
    for row in result.tests:
        print(f"{row['factor']}: {row['layer_b']} vs {row['layer_a']}: t({row['df']}) = {row['t']:.2f}, "
              f"p = {row['p']:.3g}, Bonferroni p = {row['p_bonferroni']:.3g}")
    print(f"{result.seconds_per_layer:.1f} s per layer; wrote {out}")
    return 0


def _analyze_manipulate(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from audiointerp.analysis import ActivationStore, StoreError
    from audiointerp.analysis.manipulate import ManipulateSettings, manipulate, track_manipulation, write_manipulation

    pairs: dict[str, list[tuple[str, str]]] = {}
    for item in args.pair or []:
        factor, _, classes = item.partition("=")
        p, _, q = classes.partition(",")
        if not (factor and p and q):
            raise SystemExit(f"--pair {item!r}: write FACTOR=P,Q (e.g. material=wood,metal)")
        pairs.setdefault(factor, []).append((p, q))
    settings = ManipulateSettings(factors=args.factor, within=args.within, pairs=pairs, repeats=args.repeats,
                                  clips=args.clips, valley_center=args.valley_center, valley_width=args.valley_width,
                                  typical_radius=args.typical_radius, max_triplets=args.max_triplets, output=args.output,
                                  edit=args.edit, seed=args.seed)
    result = manipulate(args.flow_export, ActivationStore(args.store), settings, progress=not args.quiet)
    if not result.triplets:
        raise StoreError("no class pair has both atypical and typical sounds: widen --valley-width or --typical-radius")
    out = Path(args.out or Path(args.flow_export) / "manipulation")
    write_manipulation(result, out, settings.output)
    track_manipulation(result, out, f"manipulate-{Path(args.store).name}", asdict(settings), settings.output, args.tracking)
    for row in result.tests:
        print(f"{row['factor']}: d({row['reference']},M) {row['mean_before']:.3f} -> d({row['reference']},M->{row['moved_to']}) "
              f"{row['mean_after']:.3f}: n = {row['n']} distinct M, t({row['df']}) = {row['t']:.2f}, "
              f"Bonferroni p = {row['p_bonferroni']:.3g}"
              f"{' (as expected)' if row['confirmed'] else ''}")
    print(f"{len(result.triplets)} triplets, {len(result.skipped)} class pairs skipped; wrote {out}")
    return 0


def _analyze_rsa(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from audiointerp.analysis import ActivationStore
    from audiointerp.analysis.rsa import (
        EuclideanBlocks,
        RSASettings,
        build_targets,
        rsa,
        select_sounds,
        sound_ids,
        spectrogram_features,
        track_rsa,
        write_rsa,
    )

    settings = RSASettings(layers=args.layers.split(",") if args.layers else None, bootstrap=args.bootstrap,
                           block_size=args.block_size, seed=args.seed)
    rows = []
    for folder in args.stores:
        store = ActivationStore(folder)
        ids = sound_ids(store, args.id_column)
        clips = select_sounds(args.target, ids, args.max_sounds, args.seed)
        targets = build_targets(args.target, store, clips, [ids[i] for i in clips], args.average)
        spectrogram = EuclideanBlocks(spectrogram_features(store, clips, progress=not args.quiet)) if args.spectrogram else None
        rows += rsa(store, targets, clips, settings, spectrogram, progress=not args.quiet)
    out = Path(args.out or Path(args.stores[0]) / "rsa")
    write_rsa(rows, out)
    track_rsa(rows, out, f"rsa-{Path(args.stores[0]).name}", {**asdict(settings), "targets": args.target}, args.tracking)
    for row in rows:
        interval = f" [{row['spearman_low']:.3f}, {row['spearman_high']:.3f}]" if "spearman_low" in row else ""
        residual = (f", residual Spearman {row['spearman_residual']:.3f}, Pearson {row['pearson_residual']:.3f}"
                    if "pearson_residual" in row else "")
        print(f"{Path(row['store']).name} {row['layer']} ~ {row['target']}: Spearman {row['spearman']:.3f}{interval}, "
              f"Pearson {row['pearson']:.3f}{residual} ({row['sounds']} sounds)")
    print(f"wrote {out}")
    return 0


def _analyze_probe(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from audiointerp.analysis import ActivationStore
    from audiointerp.analysis.probe import ProbeSettings, probe, track_probe, write_probe

    settings = ProbeSettings(factor=args.factor, train_where=args.train_where, test_where=args.test_where,
                             layers=args.layers.split(",") if args.layers else None, cs=args.cs,
                             inner_folds=args.inner_folds, bootstrap=args.bootstrap, max_sounds=args.max_sounds,
                             max_iter=args.max_iter, seed=args.seed)
    rows = probe(ActivationStore(args.store), settings, progress=not args.quiet)
    out = Path(args.out or Path(args.store) / f"probe-{args.factor}")
    title = f"{args.factor}: train {args.train_where}, test {args.test_where}" if args.train_where else args.factor
    write_probe(rows, out, title)
    track_probe(rows, out, f"probe-{Path(args.store).name}-{args.factor}", asdict(settings), title, args.tracking)
    for row in rows:
        interval = f" [{row['accuracy_low']:.3f}, {row['accuracy_high']:.3f}]" if "accuracy_low" in row else ""
        print(f"{row['layer']} {row['split']}: accuracy {row['accuracy']:.3f}{interval}, chance {row['chance']:.3f} "
              f"(C {row['C']:.3g}; {row['train_sounds']} train / {row['test_sounds']} test sounds)")
    print(f"wrote {out}")
    return 0


def _analyze_concepts(args: argparse.Namespace) -> int:
    from audiointerp.analysis import ActivationStore
    from audiointerp.analysis.concepts import ConceptSettings, analyse, track_concepts, word_vector_dictionary, write_concepts
    from audiointerp.datasets.embeddings import glove_6b_50d, load_word_vectors
    from audiointerp.datasets.vocabulary import audio_concepts

    store = ActivationStore(args.store)
    concepts = audio_concepts(args.vocabulary)
    if args.encoder == "clap":
        from audiointerp.analysis.concepts import clap_dictionary
        from audiointerp.models import build
        from audiointerp.models.clap import load_pretrained

        if not args.clap:
            raise ValueError("--encoder clap needs --clap FOLDER (a local CLAP model with its processor)")
        network = build("clap", pretrained=args.clap)
        vocabulary, dictionary = clap_dictionary(concepts, network, load_pretrained(args.clap, "ClapProcessor").tokenizer)
    elif Path(args.vectors).is_dir():  # a semDNN run or export: its own dictionary and tokenizer
        from audiointerp.analysis.concepts import run_vectors

        vectors, words = run_vectors(args.vectors)
        vocabulary, dictionary = word_vector_dictionary(concepts, vectors, words)
    else:
        vectors = glove_6b_50d() if args.vectors == "glove-6b-50d" else load_word_vectors(args.vectors)
        vocabulary, dictionary = word_vector_dictionary(concepts, vectors)
    settings = ConceptSettings(layer=args.layer, l1s=args.l1, report_l1=args.report_l1, top=args.top, factor=args.factor,
                               max_sounds=args.max_sounds)
    result = analyse(store, vocabulary, dictionary, settings)
    out = Path(args.out or Path(args.store) / "concepts")
    write_concepts(result, store, out, settings)
    track_concepts(result, out, f"concepts-{Path(args.store).name}", {**vars(settings), "vectors": args.vectors},
                   args.factor, args.tracking)
    print(f"{result['concepts']} concepts with vectors, {len(result['sounds'])} sounds")
    for row in result["rows"]:
        accuracy = f", {args.factor} accuracy {row['sparse_accuracy']:.3f}" if "sparse_accuracy" in row else ""
        print(f"l1 {row['l1']:g}: {row['nonzero']:.1f} concepts per sound, reconstruction cosine {row['cosine']:.3f}{accuracy}")
    if result["dense_accuracy"] is not None:
        print(f"dense embeddings: {args.factor} accuracy {result['dense_accuracy']:.3f}")
    for index, top in list(zip(result["sounds"], result["top"]))[:5]:
        print(f"sound {index}: " + ", ".join(f"{name} ({weight:.2f})" for name, weight in top))
    print(f"wrote {out}")
    return 0


def _listen(args: argparse.Namespace) -> int:
    from audiointerp.evaluation.listening import listening_page

    print(f"wrote {listening_page(args.exports, args.out, labels=args.label)}")
    return 0


def _quickstart(args: argparse.Namespace) -> int:
    from audiointerp.quickstart import run_quickstart

    run_quickstart(Path(args.out), overrides=args.overrides, tracking=args.tracking)
    return 0


def _list_models(args: argparse.Namespace) -> int:
    from audiointerp.models import available_models

    print("\n".join(available_models()))
    return 0


def _list_configs(args: argparse.Namespace) -> int:
    from audiointerp.configs import available_configs

    print("\n".join(available_configs()))
    return 0


def _analysis_outputs(p: argparse.ArgumentParser, default_out: str) -> None:
    """The options every analysis shares: its output folder, W&B, progress bars."""
    p.add_argument("--out", type=Path, help=f"output folder (default: {default_out})")
    p.add_argument("--tracking", choices=("wandb", "none"), default="wandb", help="W&B run (job type analysis) or none")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="audiointerp", description="Train sound-to-event networks and open them up.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
    p.add_argument("--checkpoint", default="best", help="best | last | a step number | a checkpoint folder")
    p.set_defaults(func=_export)

    p = sub.add_parser("extract", help="write layer activations of a model over a data set to an activation store")
    p.add_argument("--model", required=True, help="a zoo name (with --checkpoint) or an export folder")
    p.add_argument("--data", required=True, help="a manifest CSV or dataset root")
    p.add_argument("--layers", required=True, help="comma-separated taps; a number n means layer<n> (or the n-th tap)")
    p.add_argument("--out", required=True, type=Path, help="the store folder (an unfinished one is resumed)")
    p.add_argument("--format", default="auto", help="dataset layout (default: auto)")
    p.add_argument("--folds", nargs="+", help="only these folds")
    p.add_argument("--checkpoint", help="local weights of a zoo model")
    p.add_argument("--num-classes", type=int,
                   help="the head size of a fine-tuned checkpoint (default: a pretrained model's released head, the "
                        "checkpoint's own count, or for small_cnn/catdnn without a checkpoint the data's classes)")
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32", help="stored precision")
    p.add_argument("--force-unlock", action="store_true",
                   help="take over a shard lock recorded by another host (a shared file system) once you are sure "
                        "that writer has ended; a lock held by a running writer is never taken")
    p.add_argument("--pooling", choices=("none", "mean", "window"), default="none",
                   help="over patches: none, mean, or the mean of --window patches from --offset")
    p.add_argument("--window", type=int, default=1, help="patches per window (--pooling window)")
    p.add_argument("--offset", type=int, default=0, help="first patch of the window (--pooling window)")
    p.add_argument("--flatten", action="store_true", help="one vector per clip and layer")
    p.add_argument("--chunk-size", type=int, default=256, help="clips per chunk: the unit of resuming and sharding")
    p.add_argument("--batch-size", type=int, default=16, help="clips per forward pass")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_extract)

    analyze = sub.add_parser("analyze", help="analyses of an activation store").add_subparsers(
        dest="analysis", required=True, metavar="ANALYSIS")
    p = analyze.add_parser("decode", help="per-layer KNN decoding of factors (PCA 64, k 10, 10-fold CV, t-tests)")
    p.add_argument("store", type=Path, help="an activation store (audiointerp extract)")
    p.add_argument("--factor", action="append", required=True, help="a clip-table column to decode (repeatable)")
    p.add_argument("--layers", help="comma-separated layers (default: all in the store)")
    p.add_argument("--instances", type=int, default=3000, help="random clips per layer (default 3000)")
    p.add_argument("--components", type=int, default=64, help="PCA components (default 64)")
    p.add_argument("--neighbors", type=int, default=10, help="k of the KNN (default 10)")
    p.add_argument("--folds", type=int, default=10, help="cross-validation folds (default 10)")
    p.add_argument("--seed", type=int, default=0, help="the clip sample and the folds")
    _analysis_outputs(p, "STORE/decoding")
    p.set_defaults(func=_analyze_decode)

    p = analyze.add_parser("manipulate", help="move a factor's coordinate in a flow's code and measure the network's "
                           "outputs (Dick et al. Fig. 2)")
    p.add_argument("flow_export", type=Path, help="an export of a flow run (audiointerp train flow; audiointerp export)")
    p.add_argument("store", type=Path, help="an activation store of the same model and layer")
    p.add_argument("--factor", action="append", required=True, help="the factor to move, e.g. material (repeatable)")
    p.add_argument("--within", help="the other factor whose classes hold each experiment (default: the flow's other one)")
    p.add_argument("--pair", action="append", help="a class pair FACTOR=P,Q (repeatable; default: random pairs)")
    p.add_argument("--repeats", type=int, default=10, help="random pairs per class of the other factor (default 10)")
    p.add_argument("--clips", type=int, default=8192,
                   help="random clips of the store among those the flow did not train on (default 8192)")
    p.add_argument("--valley-center", choices=("midpoint", "subset_mean"), default="midpoint",
                   help="centre of the atypical sounds' valley: the midpoint of the p and q means, or the mean of all "
                        "sounds of the other factor's class (LatentAudio's code)")
    p.add_argument("--valley-width", type=float, default=0.2, help="atypical: within this of the centre (default 0.2)")
    p.add_argument("--typical-radius", type=float, default=0.3, help="typical: within this of the class mean (default 0.3)")
    p.add_argument("--max-triplets", type=int, help="distinct atypical sounds M (one triplet each) per factor kept for "
                   "the tests, the same ones for the same --seed (default: all)")
    p.add_argument("--output", choices=("logits", "log_sigmoid", "log_softmax"), default="logits",
                   help="what the distances are measured on (default logits)")
    p.add_argument("--edit", choices=("coordinate", "block"), default="coordinate",
                   help="move M's coordinate along the p -> q direction to the donor's value (default), or replace "
                        "M's whole code block with the donor's")
    p.add_argument("--seed", type=int, default=0, help="the clip sample, the pairs and the triplets")
    _analysis_outputs(p, "FLOW_EXPORT/manipulation")
    p.set_defaults(func=_analyze_manipulate)

    p = analyze.add_parser("rsa", help="per-layer RSA of stores against target RDMs, blockwise, bootstrap intervals")
    p.add_argument("stores", type=Path, nargs="+", help="activation stores (one line per store in the figure)")
    p.add_argument("--target", action="append", required=True,
                   help="factor:<column>, dissimilarity:<file>, or responses:<file>[:kl|:mode] (repeatable)")
    p.add_argument("--average", action="store_true", help="also the mean of the targets' RDMs")
    p.add_argument("--layers", help="comma-separated layers (default: all)")
    p.add_argument("--spectrogram", action="store_true",
                   help="also regress each model RDM on the log-mel spectrogram distances and correlate the residuals")
    p.add_argument("--id-column", default="path", help="clip-table column naming the sounds in target files "
                   "(default: path, by its file name without extension)")
    p.add_argument("--bootstrap", type=int, default=1000, help="resamples of the sounds for 95%% intervals (0: none)")
    p.add_argument("--block-size", type=int, default=1024, help="sounds per block of the upper triangle")
    p.add_argument("--max-sounds", type=int, help="at most this many sounds, drawn at random (default: all)")
    p.add_argument("--seed", type=int, default=0, help="the sound sample and the bootstrap resamples")
    _analysis_outputs(p, "the first STORE/rsa")
    p.set_defaults(func=_analyze_rsa)

    p = analyze.add_parser("probe", help="linear probes per layer (L2 logistic regression, C by inner CV), with transfer")
    p.add_argument("store", type=Path, help="an activation store")
    p.add_argument("--factor", required=True, help="the clip-table column to predict (e.g. material)")
    p.add_argument("--train-where", help="condition of the training sounds, e.g. 'hollow==1' or 'action in tapping,rubbing'")
    p.add_argument("--test-where", help="condition of the test sounds (disjoint from the training ones)")
    p.add_argument("--layers", help="comma-separated layers (default: all)")
    p.add_argument("--cs", type=int, default=10, help="C values tried by the inner cross-validation (default 10)")
    p.add_argument("--inner-folds", type=int, default=5, help="inner cross-validation folds (default 5)")
    p.add_argument("--max-iter", type=int, default=1000, help="solver iterations per fit (default 1000)")
    p.add_argument("--bootstrap", type=int, default=1000, help="resamples of the test sounds for 95%% intervals")
    p.add_argument("--max-sounds", type=int, help="draw at most this many sounds at random first (default: all)")
    p.add_argument("--seed", type=int, default=0, help="the sound sample, the baseline split, the folds, the bootstrap")
    _analysis_outputs(p, "STORE/probe-FACTOR")
    p.set_defaults(func=_analyze_probe)

    p = analyze.add_parser("concepts", help="sparse non-negative concept decompositions of stored embeddings (SpLiCE)")
    p.add_argument("store", type=Path, help="an activation store whose --layer lives in the word vectors' space "
                   "(e.g. a semDNN's output)")
    p.add_argument("--layer", required=True, help="the layer of audio embeddings")
    p.add_argument("--vocabulary", type=Path, help="concepts, one per line (default: the shipped audio vocabulary)")
    p.add_argument("--encoder", choices=("word-vectors", "clap"), default="word-vectors",
                   help="how concepts are embedded: word vectors, or CLAP's text tower (the store then holds CLAP's "
                        "embedding layer)")
    p.add_argument("--vectors", default="glove-6b-50d", help="glove-6b-50d (audiointerp[glove]), a word-vector file, or "
                   "a semDNN run or export folder (its own dictionary)")
    p.add_argument("--clap", help="with --encoder clap: a local CLAP folder (model and processor)")
    p.add_argument("--l1", type=float, nargs="+", default=[0.0, 0.01, 0.05, 0.1, 0.15], help="sparsity penalties")
    p.add_argument("--report-l1", type=float, default=0.05, help="the l1 whose top concepts are listed")
    p.add_argument("--top", type=int, default=5, help="concepts listed per sound")
    p.add_argument("--factor", help="a clip-table column probed from sparse weights and dense embeddings")
    p.add_argument("--max-sounds", type=int, help="at most this many sounds, drawn at random (default: all)")
    _analysis_outputs(p, "STORE/concepts")
    p.set_defaults(func=_analyze_concepts)

    p = sub.add_parser("listen", help="one page of originals and each autoencoder export's reconstructions")
    p.add_argument("exports", nargs="+", type=Path, help="export folders of ae_finetune or reconstruction runs")
    p.add_argument("--out", type=Path, default=Path("listening"), help="folder of report.html (default: listening)")
    p.add_argument("--label", action="append", help="a column name per export, in order (default: the classifier)")
    p.set_defaults(func=_listen)

    p = sub.add_parser("quickstart", help="the main job: synthesize data, train, evaluate, export, report")
    p.add_argument("--out", default="runs/quickstart", help="folder of the quickstart's data, runs and report")
    p.add_argument("--tracking", default="wandb", choices=("wandb", "none"), help="W&B (offline unless logged in) or none")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the classifier stage's config")
    p.set_defaults(func=_quickstart)

    p = sub.add_parser("models", help="list the model zoo")
    p.set_defaults(func=_list_models)
    p = sub.add_parser("configs", help="list the shipped experiment configs")
    p.set_defaults(func=_list_configs)
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
