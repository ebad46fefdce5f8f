"""Representational similarity analysis: RDMs, RDM correlations, dissimilarity files, cross-validated RSA.

An RDM is a symmetric n x n matrix of dissimilarities with a zero diagonal; its *upper* vector holds the entries
above the diagonal in row-major order (the order of ``scipy.spatial.distance.pdist``).

Cross-validated RSA (:func:`rsa_cv`) follows the scheme of Giordano et al. (2023), used by Esposito et al.
(2023): a target RDM (behaviour, brain) is predicted from one or more model RDMs by linear regression, and the
prediction is scored on sounds the fit never saw. For each repeat, the sounds are shuffled and split into
``n_folds`` folds; for each fold, the regression is fitted on the pairs whose two sounds are both outside the
fold and predicts the pairs whose two sounds are both inside it (pairs straddling the fold are not used). The
held-out predictions of all folds are pooled, and

    R2cv = 1 - sum((y - yhat)^2) / sum((y - mean(y))^2)

over the pooled held-out pairs, with mean(y) the mean of those pairs. ``r2_cv`` is the mean of R2cv over
repeats and ``r2_cv_std`` its standard deviation over repeats; per-fold values (each fold's SST around its own
mean) are reported as well. R2cv can be negative: a model that predicts held-out pairs worse than their mean.
"""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
from scipy import stats
from scipy.spatial.distance import pdist, squareform
from sklearn.linear_model import LinearRegression

from audiointerp.errors import DatasetError

METRICS = ("cosine", "correlation", "euclidean")
CORRELATIONS = ("spearman", "pearson", "kendall")


# --------------------------------------------------------------------------------------------------------------
# RDMs
# --------------------------------------------------------------------------------------------------------------


def rdm(features: np.ndarray, metric: str = "cosine") -> np.ndarray:
    """Square RDM [n, n] of items [n, ...] (each item flattened): cosine, correlation or euclidean distance."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, not {metric!r}")
    X = np.asarray(features, dtype=np.float64)
    if X.ndim < 1 or X.shape[0] < 2:
        raise ValueError(f"an RDM needs at least two items, got features of shape {X.shape}")
    X = X.reshape(X.shape[0], -1)
    if not np.isfinite(X).all():
        raise ValueError("features contain NaN or infinite values")
    if metric in ("cosine", "correlation"):
        centred = X - X.mean(axis=1, keepdims=True) if metric == "correlation" else X
        flat = np.flatnonzero(~np.any(centred, axis=1))
        if flat.size:
            what = "zero" if metric == "cosine" else "constant"
            raise ValueError(f"{metric} distance is undefined for items with {what} features: {flat[:10].tolist()}")
    out = squareform(pdist(X, metric=metric))
    np.fill_diagonal(out, 0.0)
    return out


def upper(matrix: np.ndarray) -> np.ndarray:
    """Entries above the diagonal of a square matrix, row by row (pdist order)."""
    M = np.asarray(matrix)
    if M.ndim != 2 or M.shape[0] != M.shape[1]:
        raise ValueError(f"expected a square matrix, got shape {M.shape}")
    return M[np.triu_indices(M.shape[0], k=1)]


def category_rdm(labels: Sequence[object] | np.ndarray) -> np.ndarray:
    """0/1 RDM of class labels: 0 for two items of the same class, 1 otherwise."""
    values = np.asarray(labels)
    if values.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {values.shape}")
    return (values[:, None] != values[None, :]).astype(np.float64)


def _vector(x: np.ndarray) -> np.ndarray:
    """Upper vector of a square RDM, or a condensed vector as is."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 2:
        return upper(a)
    if a.ndim == 1:
        return a
    raise ValueError(f"expected a square RDM or a condensed vector, got shape {a.shape}")


def rdm_correlation(a: np.ndarray, b: np.ndarray, method: str = "spearman") -> float:
    """Correlation (spearman, pearson or kendall tau-b) between the upper triangles of two RDMs."""
    if method not in CORRELATIONS:
        raise ValueError(f"method must be one of {CORRELATIONS}, not {method!r}")
    x, y = _vector(a), _vector(b)
    if x.shape != y.shape:
        raise ValueError(f"RDMs of different sizes: {x.size} and {y.size} pairs")
    if x.size < 2:
        raise ValueError("an RDM correlation needs at least two pairs (three items)")
    for name, v in (("first", x), ("second", y)):
        if not np.isfinite(v).all():
            raise ValueError(f"the {name} RDM has NaN or infinite entries")
        if np.all(v == v[0]):
            raise ValueError(f"the {name} RDM is constant; its correlation is undefined")
    if method == "spearman":
        return float(stats.spearmanr(x, y)[0])
    if method == "pearson":
        return float(stats.pearsonr(x, y)[0])
    return float(stats.kendalltau(x, y)[0])


def macro_class_rdm_correlation(
    features: np.ndarray, macro_labels: Sequence[object] | np.ndarray, method: str = "spearman", metric: str = "cosine"
) -> float:
    """Correlation between a model's RDM (cosine by default) and the 0/1 RDM of macro-classes (e.g. MSOS's five)."""
    model = rdm(features, metric=metric)
    labels = np.asarray(macro_labels)
    if labels.shape[0] != model.shape[0]:
        raise ValueError(f"{labels.shape[0]} labels for {model.shape[0]} items")
    return rdm_correlation(model, category_rdm(labels), method=method)


# --------------------------------------------------------------------------------------------------------------
# Dissimilarity files
# --------------------------------------------------------------------------------------------------------------


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _cell(text: str) -> float:
    text = text.strip()
    return float(text) if text else np.nan


def _read_csv(path: Path) -> tuple[np.ndarray, list[str] | None]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with path.open(newline="", encoding="utf-8-sig") as handle:
        rows = [[c.strip() for c in row] for row in csv.reader(handle, delimiter=delimiter) if any(c.strip() for c in row)]
    if not rows:
        raise DatasetError(f"dissimilarity file {path} is empty")
    n_rows, widths = len(rows), {len(r) for r in rows}
    if len(widths) != 1:
        raise DatasetError(f"dissimilarity file {path}: rows have different numbers of cells {sorted(widths)}")
    n_cols = widths.pop()
    first_row_text = any(not _is_number(c) for c in rows[0])
    first_col_text = any(not _is_number(r[0]) for r in rows)
    try:
        if n_rows == n_cols and (first_row_text or first_col_text):
            # header row and id column; the corner cell is a label or blank
            column_ids, row_ids = rows[0][1:], [r[0] for r in rows[1:]]
            values = np.array([[_cell(c) for c in r[1:]] for r in rows[1:]])
            if sorted(column_ids) != sorted(row_ids):
                raise DatasetError(f"dissimilarity file {path}: the header ids and the first-column ids differ")
            if column_ids != row_ids:
                values = values[:, [column_ids.index(i) for i in row_ids]]
            return values, row_ids
        if n_rows == n_cols:
            return np.array([[_cell(c) for c in r] for r in rows]), None
        if n_rows == n_cols + 1:  # header row only
            return np.array([[_cell(c) for c in r] for r in rows[1:]]), rows[0]
        if n_cols == n_rows + 1:  # id column only
            return np.array([[_cell(c) for c in r[1:]] for r in rows]), [r[0] for r in rows]
    except ValueError as error:
        if isinstance(error, DatasetError):
            raise
        raise DatasetError(f"dissimilarity file {path}: non-numeric value ({error})") from error
    raise DatasetError(f"dissimilarity file {path}: {n_rows} rows of {n_cols} cells is not a square matrix with or without ids")


def _read_ids(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        data = json.loads(text)
        if isinstance(data, dict):
            if "ids" not in data:
                raise DatasetError(f"ids file {path}: a JSON object needs an 'ids' list")
            data = data["ids"]
        if not isinstance(data, list):
            raise DatasetError(f"ids file {path}: expected a JSON list of ids")
        return [str(i) for i in data]
    return [line.strip() for line in text.splitlines() if line.strip()]


def _sidecar_ids(path: Path) -> Path | None:
    stem = path.with_suffix("")
    for candidate in (f"{stem}.ids.txt", f"{stem}.ids.json", f"{stem}_ids.txt", f"{stem}_ids.json"):
        if Path(candidate).is_file():
            return Path(candidate)
    return None


def load_dissimilarities(
    path: str | Path,
    ids: Sequence[str] | None = None,
    *,
    ids_path: str | Path | None = None,
    tolerance: float = 1e-6,
) -> tuple[np.ndarray, list[str]]:
    """Read a behavioural or brain dissimilarity matrix; return (matrix [n, n], ids), reordered to ``ids``.

    Formats: CSV (or TSV) with the sound ids in the first row and/or first column (the corner cell must not be a number),
    or a plain numeric CSV / ``.npy`` whose ids come from ``ids_path`` or a file beside it (``<stem>.ids.txt``,
    ``<stem>.ids.json``, ``<stem>_ids.txt`` or ``<stem>_ids.json``; text is one id per line, JSON a list or
    ``{"ids": [...]}``). Without any ids in or beside the file, ``ids`` is taken to name the rows in file order.

    Checks: square, finite off the diagonal, unique ids. An asymmetric matrix (beyond ``tolerance`` relative to
    its largest entry) is symmetrised as (M + M^T)/2 with a warning; a NaN diagonal is set to 0; a non-zero
    diagonal is an error (a similarity matrix passed by mistake). Requested ``ids`` missing from the file are
    an error naming them.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"dissimilarity file {path} not found")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        matrix, file_ids = np.load(path, allow_pickle=False).astype(np.float64), None
    elif suffix in (".csv", ".tsv"):
        matrix, file_ids = _read_csv(path)
    else:
        raise DatasetError(f"dissimilarity file {path}: unsupported format {suffix!r} (use .csv, .tsv or .npy)")
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise DatasetError(f"dissimilarity file {path}: matrix of shape {matrix.shape} is not square")
    n = matrix.shape[0]
    if file_ids is None:
        source = Path(ids_path) if ids_path is not None else _sidecar_ids(path)
        if source is not None:
            if not source.is_file():
                raise DatasetError(f"ids file {source} not found")
            file_ids = _read_ids(source)
        elif ids is not None and len(ids) == n:
            file_ids = [str(i) for i in ids]
        else:
            raise DatasetError(
                f"dissimilarity file {path} has no sound ids: give ids_path=, put {path.with_suffix('')}.ids.txt beside "
                f"it, or pass the {n} ids in file order"
            )
    file_ids = [str(i) for i in file_ids]
    if len(file_ids) != n:
        raise DatasetError(f"dissimilarity file {path}: {len(file_ids)} ids for a {n} x {n} matrix")
    if len(set(file_ids)) != n:
        duplicated = sorted({i for i in file_ids if file_ids.count(i) > 1})
        raise DatasetError(f"dissimilarity file {path}: duplicated ids {duplicated[:10]}")

    off = ~np.eye(n, dtype=bool)
    if not np.isfinite(matrix[off]).all():
        raise DatasetError(f"dissimilarity file {path}: NaN or infinite values off the diagonal")
    diagonal = np.diag(matrix).copy()
    diagonal[np.isnan(diagonal)] = 0.0
    scale = max(float(np.abs(matrix[off]).max(initial=0.0)), np.finfo(float).tiny)
    if np.abs(diagonal).max(initial=0.0) > tolerance * scale:
        raise DatasetError(f"dissimilarity file {path}: the diagonal is not zero (max {np.abs(diagonal).max():.4g}); is it a similarity matrix?")
    np.fill_diagonal(matrix, 0.0)
    asymmetry = float(np.abs(matrix - matrix.T).max())
    if asymmetry > tolerance * scale:
        warnings.warn(
            f"dissimilarity file {path} is not symmetric (max |M - M^T| = {asymmetry:.4g}); using (M + M^T)/2",
            stacklevel=2,
        )
    matrix = (matrix + matrix.T) / 2.0

    if ids is None:
        return matrix, file_ids
    wanted = [str(i) for i in ids]
    position = {i: k for k, i in enumerate(file_ids)}
    missing = [i for i in wanted if i not in position]
    if missing:
        raise DatasetError(f"dissimilarity file {path} lacks {len(missing)} requested ids: {missing[:20]}")
    order = np.array([position[i] for i in wanted], dtype=np.int64)
    return matrix[np.ix_(order, order)], wanted


# --------------------------------------------------------------------------------------------------------------
# Cross-validated RSA
# --------------------------------------------------------------------------------------------------------------


def item_folds(n_items: int, n_folds: int, rng: np.random.Generator) -> np.ndarray:
    """Fold index [n_items] of a random split of the items into ``n_folds`` folds of (nearly) equal size."""
    fold = np.empty(n_items, dtype=np.int64)
    for f, members in enumerate(np.array_split(rng.permutation(n_items), n_folds)):
        fold[members] = f
    return fold


def cv_pair_splits(n_items: int, n_folds: int = 5, repeats: int = 10, seed: int = 0) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
    """Yield (repeat, fold, train_pairs, test_pairs): boolean masks over the upper-vector pairs.

    Train pairs have both items outside the fold, test pairs both items inside it; no test pair shares an item
    with a train pair.
    """
    if n_folds < 2:
        raise ValueError("n_folds must be at least 2")
    if n_items < 2 * n_folds:
        raise ValueError(f"{n_items} items are too few for {n_folds} folds (each fold needs two items)")
    rows, cols = np.triu_indices(n_items, k=1)
    rng = np.random.default_rng(seed)
    for repeat in range(repeats):
        fold = item_folds(n_items, n_folds, rng)
        fold_a, fold_b = fold[rows], fold[cols]
        for f in range(n_folds):
            in_a, in_b = fold_a == f, fold_b == f
            yield repeat, f, ~in_a & ~in_b, in_a & in_b


def _predictors(model_rdms: Mapping[str, np.ndarray] | np.ndarray) -> tuple[list[str], np.ndarray]:
    if isinstance(model_rdms, Mapping):
        if not model_rdms:
            raise ValueError("no model RDMs")
        names = [str(k) for k in model_rdms]
        columns = [_vector(v) for v in model_rdms.values()]
    else:
        names, columns = ["model"], [_vector(model_rdms)]
    sizes = {c.size for c in columns}
    if len(sizes) != 1:
        raise ValueError(f"model RDMs of different sizes: {sorted(sizes)} pairs")
    X = np.column_stack(columns)
    if not np.isfinite(X).all():
        raise ValueError("model RDMs contain NaN or infinite values")
    return names, X


def _items(n_pairs: int) -> int:
    n = int(round((1 + np.sqrt(1 + 8 * n_pairs)) / 2))
    if n * (n - 1) // 2 != n_pairs:
        raise ValueError(f"{n_pairs} is not the number of pairs of any item count")
    return n


def _r2(y: np.ndarray, prediction: np.ndarray) -> float:
    sst = float(((y - y.mean()) ** 2).sum())
    if sst == 0.0:
        return float("nan")
    return 1.0 - float(((y - prediction) ** 2).sum()) / sst


def _cv_r2(
    X: np.ndarray, y: np.ndarray, n_items: int, n_folds: int, repeats: int, seed: int, non_negative: bool, fit_intercept: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Pooled R2cv per repeat [repeats] and per-fold R2 [repeats, n_folds]."""
    pooled = np.empty(repeats)
    folds = np.empty((repeats, n_folds))
    truth: list[np.ndarray] = []
    guess: list[np.ndarray] = []
    for repeat, f, train, test in cv_pair_splits(n_items, n_folds, repeats, seed):
        model = LinearRegression(fit_intercept=fit_intercept, positive=non_negative).fit(X[train], y[train])
        prediction = model.predict(X[test])
        folds[repeat, f] = _r2(y[test], prediction)
        truth.append(y[test])
        guess.append(prediction)
        if f == n_folds - 1:
            pooled[repeat] = _r2(np.concatenate(truth), np.concatenate(guess))
            truth, guess = [], []
    return pooled, folds


def rsa_cv(
    model_rdms: Mapping[str, np.ndarray] | np.ndarray,
    target_rdm: np.ndarray | None = None,
    *,
    n_folds: int = 5,
    repeats: int = 10,
    seed: int = 0,
    non_negative: bool = False,
    fit_intercept: bool = True,
    subject_rdms: np.ndarray | Sequence[np.ndarray] | None = None,
) -> dict[str, object]:
    """Cross-validated RSA: R2 of a linear prediction of ``target_rdm`` from the model RDMs on held-out sounds.

    ``model_rdms``: one RDM, or a dict name -> RDM of any number of predictors (e.g. a network layer plus a
    spectrogram-distance RDM to regress out); square RDMs or condensed upper vectors. ``non_negative`` constrains
    the regression weights to be >= 0. The folds are over sounds (see the module docstring); all predictors and
    targets share the same folds for a given ``seed``, so models compared with one seed see identical splits.

    ``subject_rdms`` [s, n, n] (optional): per-subject RDMs. The target defaults to their mean; the noise ceiling
    is estimated with the same folds, predicting each subject's RDM from the mean of all subjects (upper bound)
    or of the other subjects (lower bound), averaged over subjects; and ``r2_cv_subjects`` gives the model's
    R2cv averaged over subjects, the number to compare with the ceiling. Without them the noise ceiling is not
    computed (``noise_ceiling`` is None).
    """
    names, X = _predictors(model_rdms)
    subjects = None
    if subject_rdms is not None:
        subjects = np.stack([_vector(s) for s in subject_rdms])
        if subjects.shape[0] < 2:
            raise ValueError("a noise ceiling needs at least two subjects")
    if target_rdm is None:
        if subjects is None:
            raise ValueError("give target_rdm or subject_rdms")
        y = subjects.mean(axis=0)
    else:
        y = _vector(target_rdm)
    if y.shape[0] != X.shape[0] or (subjects is not None and subjects.shape[1] != X.shape[0]):
        raise ValueError(f"target ({y.shape[0]} pairs) and model RDMs ({X.shape[0]} pairs) differ in size")
    if not np.isfinite(y).all():
        raise ValueError("the target RDM contains NaN or infinite values")
    n_items = _items(X.shape[0])
    pooled, folds = _cv_r2(X, y, n_items, n_folds, repeats, seed, non_negative, fit_intercept)
    full = LinearRegression(fit_intercept=fit_intercept, positive=non_negative).fit(X, y)
    result: dict[str, object] = {
        "r2_cv": float(np.nanmean(pooled)),
        "r2_cv_std": float(np.nanstd(pooled)),
        "r2_cv_repeats": pooled.tolist(),
        "fold_r2": folds.tolist(),
        "fold_r2_mean": float(np.nanmean(folds)),
        "fold_r2_std": float(np.nanstd(folds)),
        "r2_full": _r2(y, full.predict(X)),
        "coefficients": dict(zip(names, (float(c) for c in full.coef_))),
        "intercept": float(full.intercept_) if fit_intercept else 0.0,
        "predictors": names,
        "n_items": n_items,
        "n_folds": n_folds,
        "repeats": repeats,
        "seed": seed,
        "non_negative": non_negative,
        "noise_ceiling": None,
    }
    if subjects is None:
        result["noise_ceiling_note"] = "not computed: no per-subject RDMs"
        return result
    s = subjects.shape[0]
    total = subjects.sum(axis=0)
    upper_bound, lower_bound, model_scores = [], [], []
    for k in range(s):
        target = subjects[k]
        upper_bound.append(np.nanmean(_cv_r2((total / s)[:, None], target, n_items, n_folds, repeats, seed, False, True)[0]))
        others = ((total - target) / (s - 1))[:, None]
        lower_bound.append(np.nanmean(_cv_r2(others, target, n_items, n_folds, repeats, seed, False, True)[0]))
        model_scores.append(np.nanmean(_cv_r2(X, target, n_items, n_folds, repeats, seed, non_negative, fit_intercept)[0]))
    result["noise_ceiling"] = {"lower": float(np.mean(lower_bound)), "upper": float(np.mean(upper_bound))}
    result["r2_cv_subjects"] = float(np.mean(model_scores))
    return result
