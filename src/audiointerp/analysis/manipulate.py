"""`audiointerp analyze manipulate`: edit a factor's coordinate in the flow's code and measure the network's output
(Dick et al., Fig. 2; LatentAudio's evaluate_disentangle).

Only clips the flow and its PCA never saw in training take part: the flow export records its training clips
(`train_indices`, with the store's clip-table digest), and the sample is drawn from the store's other clips.

For a factor (e.g. material), within each class of the other factor (e.g. each action), for class pairs (p, q) of
the factor (random pairs, `repeats` per class, or given ones):

1. Project the factor's code block onto the direction from the p mean to the q mean (for a 1-D block: the
   coordinate itself). Atypical sounds M are p-sounds in the valley between the classes: within `valley_width` of
   the midpoint of the two class means (or of the mean of all sounds of that class of the other factor, as
   LatentAudio's code does). Typical sounds P and Q lie within `typical_radius` of their class means.
2. The three lists are shuffled and cut to the shortest, pairing them by position: triplets (M, P, Q). An atypical
   sound already in a triplet of this factor (from an earlier class pair) is not used again, so each M enters
   the tests once and the tests' n is the number of distinct M sounds; `max_triplets` keeps a random subset of
   them (the same for the same seed).
3. M's coordinate is set to its P's (M->P), and separately to its Q's (M->Q): along the p -> q direction of step 1
   only, the rest of M's block kept (`edit="coordinate"`, the paper's "set M's coordinate to a P value"; for a
   1-D block the same as replacing the block), or the whole block replaced (`edit="block"`). The edited codes go
   back through the flow's inverse and the PCA pipeline's inverse to the layer's activation, and the network
   continues from that layer (`forward_from`) to its outputs.
4. Euclidean distances between outputs: d(P, M), d(P, M->P), d(P, M->Q), and the same with respect to Q.
5. Paired t-tests of d(ref, M) against d(ref, M->P) and d(ref, M->Q), ref = P and Q; Bonferroni over the four
   tests of each factor, n = the distinct M sounds. Moving M towards P should bring its outputs closer to P's:
   d(P, M->P) < d(P, M).

Writes `triplets.csv` (every triplet with its six distances), `tests.csv`, `skipped.csv` (class pairs without
enough sounds) and `manipulation.png` (bars as in the paper's Fig. 2, standard errors, tests marked).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from tqdm.auto import tqdm

from audiointerp.analysis.command import AnalysisResult, Input, write_csv
from audiointerp.analysis.extraction import store_pipeline
from audiointerp.datasets.store import ActivationStore, StoreError
from audiointerp.evaluation.plots import save_figure
from audiointerp.train.export import load_export_task
from audiointerp.train.tasks.flow_task import clips_digest
from audiointerp.train.tracking import analysis_tracking

log = logging.getLogger("audiointerp")

OUTPUTS = ("logits", "log_sigmoid", "log_softmax")
CENTRES = ("midpoint", "subset_mean")
EDITS = ("coordinate", "block")
DISTANCES = ("P,M", "P,M->P", "P,M->Q", "Q,M", "Q,M->P", "Q,M->Q")  # (reference, compared output)


def parse_pairs(items: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
    """Class pairs written FACTOR=P,Q (e.g. material=wood,metal), as factor -> [(p, q), ...] in the given order."""
    pairs: dict[str, list[tuple[str, str]]] = {}
    for item in items:
        factor, _, classes = item.partition("=")
        p, _, q = classes.partition(",")
        if not (factor and p and q):
            raise ValueError(f"--pair {item!r}: write FACTOR=P,Q (e.g. material=wood,metal)")
        pairs.setdefault(factor, []).append((p, q))
    return pairs


@dataclass
class Settings:
    """What `analyze manipulate` moves, on which sounds, and what it measures (see the module docstring)."""

    factors: Sequence[str] = field(metadata={
        "help": "the factor whose code block is moved, e.g. material, one experiment each (repeatable)",
        "flag": "--factor", "many": "append"})
    within: Optional[str] = field(default=None, metadata={
        "help": "the other factor whose classes hold each experiment (default: the flow's other one)"})
    pairs: dict[str, list[tuple[str, str]]] = field(default_factory=dict, metadata={
        "help": "a class pair FACTOR=P,Q (repeatable; default: random pairs)", "flag": "--pair", "many": "append",
        "metavar": "FACTOR=P,Q", "convert": parse_pairs})
    repeats: int = field(default=10, metadata={"help": "random (p, q) pairs per class of the other factor (LatentAudio: 10)"})
    clips: int = field(default=8192, metadata={
        "help": "random clips of the store among those the flow did not train on (LatentAudio: 2^13)"})
    valley_center: str = field(default="midpoint", metadata={
        "help": "centre of the atypical sounds' valley: the midpoint of the p and q means, or the mean of all sounds of "
                "the other factor's class (LatentAudio's code)", "choices": CENTRES})
    valley_width: float = field(default=0.2, metadata={
        "help": "atypical M: p-sounds within this of the valley's centre, in code units (LatentAudio: 0.2)"})
    typical_radius: float = field(default=0.3, metadata={
        "help": "typical P, Q: sounds within this of their class mean (LatentAudio: 0.3)"})
    max_triplets: Optional[int] = field(default=None, metadata={
        "help": "distinct atypical sounds M (one triplet each) per factor kept for the tests, the same ones for the "
                "same --seed (default: all; the paper: 199)"})
    output: str = field(default="logits", metadata={
        "help": "what the distances are measured on (LatentAudio: log_sigmoid)", "choices": OUTPUTS})
    edit: str = field(default="coordinate", metadata={
        "help": "move M's coordinate along the p -> q direction to the donor's value, or replace M's whole code block "
                "with the donor's", "choices": EDITS})
    alpha: float = field(default=0.05, metadata={"help": "family-wise level per factor (Bonferroni over its four tests)"})
    seed: int = field(default=0, metadata={"help": "the clip sample, the pairs and the triplets"})
    batch_size: int = field(default=256, metadata={"help": "clips per forward pass"})


ManipulateSettings = Settings  # the name before every analysis had a `Settings`

INPUTS = (Input("flow_export", "an export of a flow run (audiointerp train flow; audiointerp export)"),
          Input("store", "an activation store of the same model and layer"))
DEFAULT_OUT = "FLOW_EXPORT/manipulation"


@dataclass
class ManipulationResult:
    triplets: list[dict[str, Any]]  # factor, within, class, p, q, m, P, Q (store indices) and the six distances
    tests: list[dict[str, Any]]  # factor, reference, moved_to, n (distinct M), t, p, p_bonferroni, significant, means
    skipped: list[dict[str, Any]]  # class pairs without a triplet, with the counts of M, P and Q

    def distances(self, factor: str) -> dict[str, np.ndarray]:
        rows = [row for row in self.triplets if row["factor"] == factor]
        return {key: np.array([float(row[key]) for row in rows]) for key in DISTANCES}


class Manipulator:
    """A flow export, the store it reads and the network the store came from: encode, edit, decode, continue."""

    def __init__(self, flow_export: str | Path, store: ActivationStore, output: str = "logits",
                 batch_size: int = 256) -> None:
        if output not in OUTPUTS:
            raise ValueError(f"output {output!r}; choose one of {', '.join(OUTPUTS)}")
        self.task, metadata = load_export_task(flow_export)
        if getattr(self.task, "name", "") != "flow":
            raise StoreError(f"{flow_export} is an export of task {self.task.name!r}, not of a flow")
        self.store, self.layer, self.output, self.batch_size = store, self.task.layer, output, batch_size
        if self.layer not in store.layers:
            raise StoreError(f"the flow reads layer {self.layer!r}, which the store {store.folder} does not hold")
        if metadata.get("store_identity") != store.model_identity() or list(store.shape(self.layer)) != list(self.task.layer_shape):
            raise StoreError(f"the flow {flow_export} was trained on activations of another model or layer shape "
                             f"({metadata.get('store_model')}) than the store {store.folder} ({store.meta.get('model')})")
        self.held_out = held_out_clips(metadata, store, flow_export)
        self.network = store_pipeline(store.meta).network

    def codes(self, indices: np.ndarray, progress: bool = False) -> np.ndarray:
        """Flow codes [n, D] of the store's clips `indices`, chunk by chunk."""
        out = []
        for start in tqdm(range(0, len(indices), self.batch_size), desc="encode", unit="batch", disable=not progress,
                          leave=False):
            z, _ = self.task.encode(self.store.load(self.layer, indices[start:start + self.batch_size]))
            out.append(z.numpy())
        return np.concatenate(out) if out else np.zeros((0, self.task.flow.dim), dtype=np.float32)

    @torch.no_grad()
    def outputs(self, activations: np.ndarray) -> np.ndarray:
        """The network continued from the layer: outputs [n, C], the mean over a clip's patches, transformed."""
        patches = self.store.as_patches(self.layer, np.asarray(activations))
        flat = torch.as_tensor(patches, dtype=torch.float32).flatten(0, 1)
        out = self.network.forward_from(flat, self.layer).reshape(len(patches), patches.shape[1], -1).mean(1)
        if self.output == "log_sigmoid":
            out = F.logsigmoid(out)
        elif self.output == "log_softmax":
            out = out.log_softmax(-1)
        return out.double().numpy()

    def edited_outputs(self, m: np.ndarray, donors: np.ndarray, block: slice,
                       axes: Optional[np.ndarray] = None) -> np.ndarray:
        """Outputs of clips `m` with their code block replaced by the block of clips `donors` (pairwise), or, with
        unit `axes` [n, block width], only their coordinate along each axis set to the donor's."""
        z, remainder = self.task.encode(self.store.load(self.layer, m))
        donor = torch.as_tensor(self.codes(donors)[:, block])
        if axes is None:
            z[:, block] = donor
        else:
            axes = torch.as_tensor(np.asarray(axes), dtype=z.dtype)
            z[:, block] += ((donor - z[:, block]) * axes).sum(1, keepdim=True) * axes
        return self.outputs(self.task.decode(z, remainder))


def held_out_clips(metadata: dict[str, Any], store: ActivationStore, flow_export: str | Path) -> np.ndarray:
    """Store indices of the clips the flow and its PCA never trained on (sorted). The export records its
    training clips and the digest of its store's clip table; another clip table is refused, since its indices
    would not say which clips the flow saw."""

    if "train_indices" not in metadata or "store_clips_sha256" not in metadata:
        raise StoreError(f"the flow export {flow_export} does not record the clips it trained on (made before "
                         "held-out manipulation): train and export the flow again")
    if metadata["store_clips_sha256"] != clips_digest(store) or int(metadata.get("store_clips", -1)) != len(store):
        raise StoreError(f"the store {store.folder} holds other clips than the store the flow trained on "
                         f"({metadata.get('store')}): its held-out clips cannot be known; pass the flow's store")
    seen = np.union1d(np.asarray(metadata["train_indices"], dtype=np.int64),
                      np.asarray(metadata.get("pca_indices", []), dtype=np.int64))
    held_out = np.setdiff1d(np.arange(len(store)), seen)
    if not len(held_out):
        raise StoreError(f"the flow {flow_export} trained on every clip of {store.folder}: none is left to manipulate")
    return held_out


def _select(s: np.ndarray, is_p: np.ndarray, is_q: np.ndarray, centre: float, settings: Settings,
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions (into the subset) of atypical M and typical P and Q sounds."""
    mean_p, mean_q = s[is_p].mean(), s[is_q].mean()
    m = np.flatnonzero(is_p & (s > centre - settings.valley_width) & (s <= centre + settings.valley_width))
    p = np.flatnonzero(is_p & (np.abs(s - mean_p) < settings.typical_radius))
    p = np.setdiff1d(p, m)  # a sound is atypical or typical, not both
    q = np.flatnonzero(is_q & (np.abs(s - mean_q) < settings.typical_radius))
    return m, p, q


def find_triplets(z: np.ndarray, sample: np.ndarray, values: np.ndarray, within: np.ndarray, factor: str,
                  within_name: str, block: slice, settings: Settings, rng: np.random.Generator,
                  ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Triplets (M, P, Q) of store indices for one factor, and the class pairs skipped for want of sounds. Each
    atypical sound M appears in one triplet at most (later class pairs skip the M sounds already used)."""
    triplets, skipped = [], []
    used: set[int] = set()
    for context in sorted(set(within.tolist())):
        subset = np.flatnonzero(within == context)
        classes = sorted(set(values[subset].tolist()))
        if settings.pairs.get(factor):
            pairs = [(p, q) for p, q in settings.pairs[factor]]
            unknown = sorted({c for pair in pairs for c in pair} - set(values.tolist()))
            if unknown:
                raise StoreError(f"{factor} has no class {', '.join(unknown)}; its classes: {', '.join(sorted(set(values.tolist())))}")
        elif len(classes) < 2:
            continue
        else:
            pairs = [tuple(rng.choice(classes, size=2, replace=False).tolist()) for _ in range(settings.repeats)]
        for p_class, q_class in pairs:
            is_p, is_q = values[subset] == p_class, values[subset] == q_class
            counts = {"factor": factor, "within": within_name, "class": context, "p": p_class, "q": q_class}
            if not is_p.any() or not is_q.any():
                skipped.append({**counts, "m": 0, "P": int(is_p.sum()), "Q": int(is_q.sum()), "reason": "class missing"})
                continue
            codes = z[subset][:, block]
            direction = codes[is_q].mean(0) - codes[is_p].mean(0)
            if not np.linalg.norm(direction):
                skipped.append({**counts, "m": 0, "P": 0, "Q": 0, "reason": "equal class means"})
                continue
            s = codes @ (direction / np.linalg.norm(direction))
            centre = 0.5 * (s[is_p].mean() + s[is_q].mean()) if settings.valley_center == "midpoint" else s.mean()
            m, p, q = _select(s, is_p, is_q, centre, settings)
            m = np.array([i for i in m if int(sample[subset[i]]) not in used], dtype=np.int64)
            n = min(len(m), len(p), len(q))
            if not n:
                skipped.append({**counts, "m": len(m), "P": len(p), "Q": len(q), "reason": "too few sounds"})
                continue
            m, p, q = (rng.permutation(positions)[:n] for positions in (m, p, q))
            used.update(int(sample[subset[i]]) for i in m)
            axis = direction / np.linalg.norm(direction)  # the coordinate an edit moves along (not written)
            triplets += [{**counts, "m": int(sample[subset[a]]), "P": int(sample[subset[b]]), "Q": int(sample[subset[c]]),
                          "axis": axis} for a, b, c in zip(m, p, q)]
    return triplets, skipped


def manipulate(flow_export: str | Path, store: ActivationStore, settings: Settings,
               progress: bool = True) -> ManipulationResult:
    """Run the experiment for every factor of `settings` (a factor without any triplet is skipped with a warning;
    its class pairs are in `skipped`)."""
    if settings.valley_center not in CENTRES:
        raise ValueError(f"valley_center {settings.valley_center!r}; choose one of {', '.join(CENTRES)}")
    if settings.edit not in EDITS:
        raise ValueError(f"edit {settings.edit!r}; choose one of {', '.join(EDITS)}")
    tool = Manipulator(flow_export, store, settings.output, settings.batch_size)
    factors, blocks = tool.task.factors, tool.task.blocks()
    rng = np.random.default_rng(settings.seed)
    pool = np.asarray(tool.held_out)  # clips the flow and its PCA never saw
    sample = np.sort(rng.choice(pool, size=min(settings.clips, len(pool)), replace=False))
    log.info("manipulating %d of the %d clips the flow did not train on", len(sample), len(pool))
    z = tool.codes(sample, progress)
    result = ManipulationResult([], [], [])
    for factor in settings.factors:
        if factor not in factors:
            raise StoreError(f"the flow has no factor {factor!r}; its factors: {', '.join(factors)}")
        others = [f for f in factors if f != factor]
        within_name = settings.within or (others[0] if len(others) == 1 else None)
        if within_name is None or within_name == factor:
            raise StoreError(f"choose the other factor whose classes hold each experiment (--within); the flow's "
                             f"factors: {', '.join(factors)}")
        triplets, skipped = find_triplets(z, sample, store.column(factor)[sample], store.column(within_name)[sample],
                                          factor, within_name, blocks[factor], settings, rng)
        result.skipped += skipped
        if settings.max_triplets is not None and len(triplets) > settings.max_triplets:
            # distinct M sounds (one triplet each), the same ones for the same seed, whatever other factors ran
            keep = np.random.default_rng((settings.seed, factors.index(factor))).choice(
                len(triplets), size=settings.max_triplets, replace=False)
            triplets = [triplets[i] for i in np.sort(keep)]
        if not triplets:
            log.warning("no triplets for %s: no class pair has both atypical and typical sounds (widen valley_width=%s "
                        "or typical_radius=%s)", factor, settings.valley_width, settings.typical_radius)
            continue
        _measure(tool, triplets, blocks[factor], progress, settings.edit)
        result.triplets += triplets
        result.tests += _tests(result.distances(factor), factor, settings.alpha, triplets)
    return result


def _measure(tool: Manipulator, triplets: list[dict[str, Any]], block: slice, progress: bool,
             edit: str = "coordinate") -> None:
    """Add the six output distances to each triplet (`edit`: see `Settings`)."""
    size = tool.batch_size
    for start in tqdm(range(0, len(triplets), size), desc="manipulate", unit="batch", disable=not progress, leave=False):
        rows = triplets[start:start + size]
        m, p, q = (np.array([row[key] for row in rows]) for key in ("m", "P", "Q"))
        out = {key: tool.outputs(tool.store.load(tool.layer, indices)) for key, indices in (("M", m), ("P", p), ("Q", q))}
        axes = np.stack([row["axis"] for row in rows]) if edit == "coordinate" else None
        out["M->P"], out["M->Q"] = tool.edited_outputs(m, p, block, axes), tool.edited_outputs(m, q, block, axes)
        for key in DISTANCES:
            reference, compared = key.split(",")
            distance = np.linalg.norm(out[reference] - out[compared], axis=1)
            for row, value in zip(rows, distance):
                row[key] = float(value)


def _tests(distances: dict[str, np.ndarray], factor: str, alpha: float,
           triplets: Optional[Sequence[dict[str, Any]]] = None) -> list[dict[str, Any]]:
    """Paired t-tests of d(ref, M) against d(ref, M->X); t > 0 means the edit moved the outputs closer to ref.
    n is the number of distinct M sounds (`distinct_m`; each enters once), with the distinct donors P and Q."""
    tests = []
    distinct = {key: len({row[key] for row in triplets}) if triplets is not None else len(distances["P,M"])
                for key in ("m", "P", "Q")}
    if distinct["m"] != len(distances["P,M"]):
        raise ValueError(f"{factor}: {len(distances['P,M'])} triplets hold {distinct['m']} distinct M sounds; each M "
                         "must enter the tests once")
    for reference in ("P", "Q"):
        for moved in ("P", "Q"):
            before, after = distances[f"{reference},M"], distances[f"{reference},M->{moved}"]
            t, p = stats.ttest_rel(before, after) if len(before) > 1 else (float("nan"), float("nan"))
            tests.append({"factor": factor, "reference": reference, "moved_to": moved, "n": len(before),
                          "distinct_m": distinct["m"], "distinct_P": distinct["P"], "distinct_Q": distinct["Q"],
                          "df": len(before) - 1, "mean_before": float(before.mean()), "mean_after": float(after.mean()),
                          "t": float(t), "p": float(p), "expected": "closer" if moved == reference else "farther"})
    for row in tests:
        row["p_bonferroni"] = min(1.0, row["p"] * len(tests)) if np.isfinite(row["p"]) else float("nan")
        row["significant"] = bool(row["p_bonferroni"] < alpha)
        row["confirmed"] = row["significant"] and (row["t"] > 0) == (row["expected"] == "closer")
    return tests


def manipulation_figure(result: ManipulationResult, output: str = "logits"):
    """The paper's Fig. 2: mean distances (± standard error) per factor, with respect to P and to Q; the tests
    marked * (significant after Bonferroni) or n.s. above the edited bars."""
    import matplotlib.pyplot as plt

    factors = list(dict.fromkeys(row["factor"] for row in result.triplets))
    fig, axes = plt.subplots(1, len(factors), figsize=(5.2 * len(factors), 3.6), squeeze=False)
    colours = {"M": "#9e9e9e", "M->P": "#1f77b4", "M->Q": "#d62728"}
    names = {"M": "M (unedited)", "M->P": "M moved to P's value", "M->Q": "M moved to Q's value"}
    for ax, factor in zip(axes[0], factors):
        distances = result.distances(factor)
        tests = {(t["reference"], t["moved_to"]): t for t in result.tests if t["factor"] == factor}
        for group, reference in enumerate(("P", "Q")):
            for offset, compared in enumerate(("M", "M->P", "M->Q")):
                values = distances[f"{reference},{compared}"]
                x = group * 4 + offset
                error = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else 0.0
                ax.bar(x, values.mean(), yerr=error, capsize=3, color=colours[compared],
                       label=names[compared] if group == 0 else None)
                if compared != "M":
                    test = tests[(reference, compared[-1])]
                    mark = "*" if test["significant"] else "n.s."
                    ax.annotate(f"{mark}\nt={test['t']:.2f}", (x, values.mean() + error), ha="center", va="bottom",
                                fontsize=7, xytext=(0, 2), textcoords="offset points")
        ax.set_xticks([1, 5], ["distance to P", "distance to Q"], fontsize=8)
        ax.set_ylabel(f"Euclidean distance of {output}")
        ax.set_title(f"moving the {factor} coordinate (n = {len(distances['P,M'])} distinct M, held-out clips)",
                     fontsize=9)
        ax.margins(y=0.25)
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def write_manipulation(result: ManipulationResult, out: Path, output: str = "logits") -> list[Path]:
    """triplets.csv, tests.csv, skipped.csv and manipulation.png in `out`."""
    written = [write_csv(out / "triplets.csv", result.triplets, ["factor", "within", "class", "p", "q", "m", "P", "Q", *DISTANCES]),
               write_csv(out / "tests.csv", result.tests, list(result.tests[0]) if result.tests else ["factor"]),
               write_csv(out / "skipped.csv", result.skipped, ["factor", "within", "class", "p", "q", "m", "P", "Q", "reason"])]
    if result.triplets:
        written.append(save_figure(manipulation_figure(result, output), out / "manipulation.png"))
    return written


def track_manipulation(result: ManipulationResult, out: Path, name: str, settings: dict, output: str = "logits",
                       backend: str = "wandb") -> None:
    """Log the t statistics and the bars to a W&B run of job type `analysis`."""

    tracking = analysis_tracking(out, name, settings, backend)
    if not result.triplets:
        tracking.finish()
        return
    tracking.log({f"manipulate/{t['factor']}/t_{t['reference']}_M_to_{t['moved_to']}": t["t"] for t in result.tests}, 0, 0.0)
    tracking.log_figures({"manipulation": manipulation_figure(result, output)}, 0, "manipulate")
    tracking.finish()


@dataclass
class Result(AnalysisResult):
    """`run`'s answer: `rows` are tests.csv's (four paired t-tests per factor)."""

    settings: Settings
    manipulation: ManipulationResult  # the triplets with their distances, the tests, the class pairs skipped


def run(settings: Settings, flow_export: str | Path, store: str | Path | ActivationStore, out: Optional[Path] = None,
        tracking: str = "wandb", progress: bool = True, name: Optional[str] = None) -> Result:
    """Run the experiment (`manipulate`), write the tables and bars to `out` (default: FLOW_EXPORT/manipulation)
    and track them in a W&B run `name` (default: manipulate-STORE) of job type analysis (`tracking="none"`:
    metrics.jsonl only). Raises StoreError, writing nothing, when no factor has a triplet."""
    store = store if isinstance(store, ActivationStore) else ActivationStore(store)
    manipulation = manipulate(flow_export, store, settings, progress=progress)
    if not manipulation.triplets:
        raise StoreError("no class pair has both atypical and typical sounds: widen --valley-width or --typical-radius")
    out = Path(out or Path(flow_export) / "manipulation")
    files = write_manipulation(manipulation, out, settings.output)
    track_manipulation(manipulation, out, name or f"manipulate-{store.folder.name}", asdict(settings), settings.output,
                       tracking)
    return Result(manipulation.tests, out, files, settings, manipulation)


def summary(result: Result) -> str:
    """A line per test (distances before and after, n, t, Bonferroni p), then the counts and the folder."""
    lines = [f"{row['factor']}: d({row['reference']},M) {row['mean_before']:.3f} -> d({row['reference']},M->{row['moved_to']}) "
             f"{row['mean_after']:.3f}: n = {row['n']} distinct M, t({row['df']}) = {row['t']:.2f}, "
             f"Bonferroni p = {row['p_bonferroni']:.3g}{' (as expected)' if row['confirmed'] else ''}"
             for row in result.rows]
    manipulation = result.manipulation
    lines.append(f"{len(manipulation.triplets)} triplets, {len(manipulation.skipped)} class pairs skipped; wrote {result.out}")
    return "\n".join(lines)
