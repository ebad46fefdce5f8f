"""The catalog of released weights, by name, and `fetch_weights(name)`: `weights:NAME` anywhere a checkpoint is taken.

Each `WeightsEntry` names its zoo model, where the file comes from (a URL, a Hugging Face hub repository and file
at a pinned revision, or `manual` instructions where the release has no direct link), the cached file's name, the
class count of its head, its licence and its paper. The URLs and file names are the upstream code's own tables
(EfficientAT `models/mn/model.py` and `models/dymn/model.py` at a425fdc, hear21passt `models/passt.py` at 5f1cce6,
torch_audioset's YAMNet `ckpt_url`, the BEATs README, the hub repositories, gensim-data's `list.json` at bd93f51).
No URL was opened when the catalog was written; none of these releases publishes a sha256 except where one is
given (`sha256`/`md5`), so the first download's sha256 is recorded and checked from then on (trust on first use).

Plain URLs go through `fetching.download` (the weights cache, `$AUDIOINTERP_WEIGHTS`); hub entries through
`huggingface_hub` (its own cache, `HF_ENDPOINT`, `HF_HUB_OFFLINE`). `validate` is the caller's check that a new
file loads into its zoo model (`models.registry` passes one; this package cannot import models).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from audiointerp.downloads.fetching import (
    Record,
    check_cached,
    download,
    file_hash,
    first_line,
    now_utc,
    offline,
    offline_reason,
    read_records,
    weights_cache,
    write_record,
)
from audiointerp.errors import ConfigError, DownloadError, closest

WEIGHTS_PREFIX = "weights:"

EFFICIENTAT_URL = "https://github.com/fschmid56/EfficientAT/releases/download/v0.0.1/"
EFFICIENTAT_MN_PAPER = ("Schmid, Koutini, Widmer, \"Efficient Large-Scale Audio Tagging via Transformer-to-CNN Knowledge "
                        "Distillation\", ICASSP 2023, arXiv:2211.04772")
EFFICIENTAT_DYMN_PAPER = ("Schmid, Koutini, Widmer, \"Dynamic Convolutional Neural Networks as Efficient Pre-trained Audio "
                          "Models\", arXiv:2310.15648")
EFFICIENTAT_LICENCE = "MIT (fschmid56/EfficientAT)"
PASST_PAPER = ("Koutini, Schlüter, Eghbal-zadeh, Widmer, \"Efficient Training of Audio Transformers with Patchout\", "
               "Interspeech 2022, arXiv:2110.05069")
BEATS_PAPER = "Chen et al., \"BEATs: Audio Pre-Training with Acoustic Tokenizers\", ICML 2023, arXiv:2212.09058"
BEATS_README = "https://github.com/microsoft/unilm/tree/master/beats"
WORD2VEC_PAPER = ("Mikolov et al., \"Distributed Representations of Words and Phrases and their Compositionality\", "
                  "NeurIPS 2013, arXiv:1310.4546")


@dataclass(frozen=True)
class WeightsEntry:
    """One released set of weights.

    `url` is the direct download (None for hub and manual entries); `hub_repo` + `revision` + `file` a file of a
    Hugging Face repository, or with `file` None the whole repository (a folder: `hub_patterns` chooses its
    files); `manual` says where to get a file that has no direct link. `file` is the cached file's name.
    `params` are the zoo builder's parameters the weights need (e.g. a fully convolutional head). `loads` false:
    the zoo cannot build this variant, so the file is checked for its hash only. `notes` are shown by `list`.
    """

    name: str
    model: Optional[str]  # the zoo model (None: not a network, e.g. word vectors)
    file: Optional[str]
    num_classes: Optional[int]
    licence: str
    paper: str
    url: Optional[str] = None
    hub_repo: Optional[str] = None
    revision: Optional[str] = None
    hub_patterns: tuple[str, ...] = ()
    manual: Optional[str] = None
    sha256: Optional[str] = None
    md5: Optional[str] = None
    size: Optional[int] = None
    params: Mapping[str, Any] = field(default_factory=dict)
    loads: bool = True
    use: str = "checkpoint"  # checkpoint (model.checkpoint=, --checkpoint) | pretrained (a folder) | vectors (task.vectors)
    notes: str = ""

    @property
    def source(self) -> str:
        """`url`, `hub` or `manual`."""
        return "hub" if self.hub_repo else ("manual" if self.manual else "url")

    def where(self) -> str:
        """Where the file comes from, in words (its URL, hub repository, or the manual instructions)."""
        if self.hub_repo:
            return f"https://huggingface.co/{self.hub_repo} ({self.file or 'whole repository'} at {self.revision or 'main'})"
        return self.url or str(self.manual)

    def to_json(self) -> dict[str, Any]:
        """The `weights list --json` object: name, model, url (null for hub and manual entries), hub_repo, file,
        num_classes, and the rest."""
        return {"name": self.name, "model": self.model, "url": self.url, "hub_repo": self.hub_repo,
                "revision": self.revision, "file": self.file, "num_classes": self.num_classes, "source": self.source,
                "licence": self.licence, "paper": self.paper, "sha256": self.sha256, "md5": self.md5,
                "size": self.size, "params": dict(self.params), "use": self.use, "manual": self.manual,
                "notes": self.notes}


def _mn(name: str, file: str, model: str, notes: str = "", **params: Any) -> WeightsEntry:
    return WeightsEntry(name, model, file, 527, EFFICIENTAT_LICENCE, EFFICIENTAT_MN_PAPER, url=EFFICIENTAT_URL + file,
                        params=params, notes=notes)


def _dymn(name: str, file: str, model: str, notes: str = "", loads: bool = True) -> WeightsEntry:
    return WeightsEntry(name, model, file, 527, EFFICIENTAT_LICENCE, EFFICIENTAT_DYMN_PAPER, url=EFFICIENTAT_URL + file,
                        loads=loads, notes=notes)


def _beats(name: str, file: str, classes: Optional[int]) -> WeightsEntry:
    return WeightsEntry(name, "beats", file, classes, "MIT (microsoft/unilm)", BEATS_PAPER,
                        manual=f"the BEATs README, {BEATS_README} (its links are OneDrive pages, not direct downloads; "
                               f"the file is {file})",
                        notes="no direct download upstream: put the file at the path `weights fetch` prints")


_PARENS = "the upstream table names this file with parentheses; whether GitHub serves it under that name is UNVERIFIED"
_HOP = "released for another front end ({}); the zoo's default front end differs (set model.frontend_params)"

CATALOG: dict[str, WeightsEntry] = {e.name: e for e in [
    # EfficientAT MobileNetV3 (mn), AudioSet, 527 classes: models/mn/model.py's pretrained_models
    _mn("mn01_as", "mn01_as_mAP_298.pt", "mn01"),
    _mn("mn02_as", "mn02_as_mAP_378.pt", "mn02"),
    _mn("mn04_as", "mn04_as_mAP_432.pt", "mn04"),
    _mn("mn05_as", "mn05_as_mAP_443.pt", "mn05"),
    _mn("mn10_as", "mn10_as_mAP_471.pt", "mn10"),
    _mn("mn20_as", "mn20_as_mAP_478.pt", "mn20"),
    _mn("mn30_as", "mn30_as_mAP_482.pt", "mn30"),
    _mn("mn40_as", "mn40_as_mAP_484.pt", "mn40"),
    _mn("mn40_as_2", "mn40_as_mAP_483.pt", "mn40", "upstream mn40_as(2), an ensemble member"),
    _mn("mn40_as_3", "mn40_as_mAP_483(2).pt", "mn40", "upstream mn40_as(3); " + _PARENS),
    _mn("mn40_as_no_im_pre", "mn40_as_no_im_pre_mAP_483.pt", "mn40", "no ImageNet pre-training"),
    _mn("mn40_as_no_im_pre_2", "mn40_as_no_im_pre_mAP_483(2).pt", "mn40",
        "upstream mn40_as_no_im_pre(2); " + _PARENS),
    _mn("mn40_as_no_im_pre_3", "mn40_as_no_im_pre_mAP_482.pt", "mn40", "upstream mn40_as_no_im_pre(3)"),
    _mn("mn40_as_ext", "mn40_as_ext_mAP_487.pt", "mn40", "300 epochs"),
    _mn("mn40_as_ext_2", "mn40_as_ext_mAP_486.pt", "mn40", "upstream mn40_as_ext(2)"),
    _mn("mn40_as_ext_3", "mn40_as_ext_mAP_485.pt", "mn40", "upstream mn40_as_ext(3)"),
    _mn("mn10_as_hop_5", "mn10_as_hop_5_mAP_475.pt", "mn10", _HOP.format("hop 5 ms")),
    _mn("mn10_as_hop_15", "mn10_as_hop_15_mAP_463.pt", "mn10", _HOP.format("hop 15 ms")),
    _mn("mn10_as_hop_20", "mn10_as_hop_20_mAP_456.pt", "mn10", _HOP.format("hop 20 ms")),
    _mn("mn10_as_hop_25", "mn10_as_hop_25_mAP_447.pt", "mn10", _HOP.format("hop 25 ms")),
    _mn("mn10_as_mels_40", "mn10_as_mels_40_mAP_453.pt", "mn10", _HOP.format("40 mel bands")),
    _mn("mn10_as_mels_64", "mn10_as_mels_64_mAP_461.pt", "mn10", _HOP.format("64 mel bands")),
    _mn("mn10_as_mels_256", "mn10_as_mels_256_mAP_474.pt", "mn10", _HOP.format("256 mel bands")),
    _mn("mn10_as_fc", "mn10_as_fc_mAP_465.pt", "mn10", "fully convolutional head", head_type="fully_convolutional"),
    _mn("mn10_as_fc_s2221", "mn10_as_fc_s2221_mAP_466.pt", "mn10", "fully convolutional head, strides 2,2,2,1",
        head_type="fully_convolutional", strides=[2, 2, 2, 1]),
    _mn("mn10_as_fc_s2211", "mn10_as_fc_s2211_mAP_466.pt", "mn10", "fully convolutional head, strides 2,2,1,1",
        head_type="fully_convolutional", strides=[2, 2, 1, 1]),
    # EfficientAT dynamic MobileNets (dymn), AudioSet, 527 classes: models/dymn/model.py's pretrained_models
    _dymn("dymn04_as", "dymn04_as.pt", "dymn04"),
    _dymn("dymn10_as", "dymn10_as.pt", "dymn10"),
    _dymn("dymn20_as", "dymn20_as_mAP_493.pt", "dymn20", "upstream's default dymn20_as since 2024-02"),
    _dymn("dymn20_as_1", "dymn20_as.pt", "dymn20", "upstream's earlier dymn20_as"),
    _dymn("dymn20_as_2", "dymn20_as_mAP_489.pt", "dymn20"),
    _dymn("dymn20_as_3", "dymn20_as_mAP_490.pt", "dymn20"),
    _dymn("dymn04_replace_se_as", "dymn04_replace_se_as.pt", "dymn04",
          "use_dy_blocks='replace_se' (UNVERIFIED pairing); the zoo has no such variant: hash check only", loads=False),
    _dymn("dymn10_replace_se_as", "dymn10_replace_se_as.pt", "dymn10",
          "use_dy_blocks='replace_se' (UNVERIFIED pairing); the zoo has no such variant: hash check only", loads=False),
    # PaSST-S with stochastic weight averaging (hear21passt's default architecture), AudioSet
    WeightsEntry("passt_s_swa_p16_128_ap476", "passt", "passt-s-f128-p16-s10-ap.476-swa.pt", 527,
                 "Apache-2.0 (kkoutini/PaSST)", PASST_PAPER,
                 url="https://github.com/kkoutini/PaSST/releases/download/v0.0.1-audioset/"
                     "passt-s-f128-p16-s10-ap.476-swa.pt"),
    # YAMNet, the torch port of w-hc/torch_audioset (torch-vggish-yamnet), AudioSet's 521 classes
    WeightsEntry("yamnet", "yamnet", "yamnet.pth", 521,
                 "MIT (w-hc/torch_audioset port); the TensorFlow weights are Apache-2.0 (tensorflow/models)",
                 "none (tensorflow/models research/audioset/yamnet); AudioSet: Gemmeke et al., ICASSP 2017",
                 url="https://github.com/w-hc/torch_audioset/releases/download/v0.1/yamnet.pth"),
    # BEATs: no direct download upstream (dead Azure links, then OneDrive pages)
    _beats("beats_iter3", "BEATs_iter3.pt", None),
    _beats("beats_iter3_plus_as2m", "BEATs_iter3_plus_AS2M.pt", None),
    _beats("beats_iter3_plus_as2m_finetuned_cpt2", "BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt", 527),
    # ArchiSound's autoencoder, from the hub at the revision archisound pins
    WeightsEntry("autoencoder1d-at-v1", "autoencoder1d-at-v1", "pytorch_model.bin", None,
                 "none stated on the hub (code: archisound, audio-encoders-pytorch, MIT)",
                 "Schneider, \"ArchiSound: Audio Generation with Diffusion\", MSc thesis, ETH Zürich 2023, "
                 "arXiv:2301.13267", hub_repo="archinetai/autoencoder1d-AT-v1",
                 revision="57b6cde1969208d10fdd3e813708c1abe49f25c1"),
    # LAION CLAP HTSAT unfused, transformers' layout: a hub folder for build('clap', pretrained=...)
    WeightsEntry("clap-htsat-unfused", "clap", None, None, "Apache-2.0 (hub tag)",
                 "Wu, Chen et al., \"Large-scale Contrastive Language-Audio Pretraining with Feature Fusion and "
                 "Keyword-to-Caption Augmentation\", ICASSP 2023, arXiv:2211.06687",
                 hub_repo="laion/clap-htsat-unfused", revision="8fa0f1c6d0433df6e97c127f64b2a1d6c0dcda8a",
                 hub_patterns=("*.json", "*.txt", "pytorch_model.bin", "model.safetensors"), use="pretrained",
                 notes="a folder: model.params.pretrained=weights:clap-htsat-unfused"),
    # the paper's word vectors for semDNN (task.vectors), through gensim-data's release
    WeightsEntry("word2vec-google-news-300", None, "word2vec-google-news-300.gz", None,
                 "unspecified (gensim-data lists none; the gensim-data repository is LGPL-2.1)", WORD2VEC_PAPER,
                 url="https://github.com/RaRe-Technologies/gensim-data/releases/download/word2vec-google-news-300/"
                     "word2vec-google-news-300.gz",
                 md5="a5e5354d40acb95f9ec66d5977d140ef", size=1743563840, use="vectors",
                 notes="GoogleNews word2vec, 3M words, 300-d, binary gzip: task.vectors=weights:word2vec-google-news-300"),
]}


def available_weights() -> list[str]:
    """The catalog's names, sorted."""
    return sorted(CATALOG)


def weights_entry(name: str) -> WeightsEntry:
    """The catalog entry `name`; a `ConfigError` naming the closest one for an unknown name."""
    if name not in CATALOG:
        raise ConfigError(f"unknown weights {name!r}{closest(name, CATALOG)}; `audiointerp weights list` shows the catalog")
    return CATALOG[name]


def weights_name(reference: str | os.PathLike[str]) -> Optional[str]:
    """The catalog name of a `weights:NAME` reference, or None for anything else (a plain path)."""
    text = os.fspath(reference)
    return text[len(WEIGHTS_PREFIX):].strip() if isinstance(text, str) and text.startswith(WEIGHTS_PREFIX) else None


def cached_path(entry: WeightsEntry) -> Path:
    """Where a URL or manual entry's file lives in the weights cache (existing or not); hub entries live in the
    hub's cache (see `fetch_weights`)."""
    if entry.file is None:
        raise ConfigError(f"weights {entry.name!r} is a hub folder; it has no single file in the weights cache")
    return weights_cache() / entry.name / entry.file


def _gzip_check(path: Path) -> None:
    with open(path, "rb") as handle:
        if handle.read(2) != b"\x1f\x8b":
            raise DownloadError(f"{path.name} is not a gzip file")


def fetch_weights(name: str, *, validate: Optional[Callable[[Path], None]] = None, sha256: Optional[str] = None,
                  progress: bool = True) -> Path:
    """The local path of the catalog entry `name` (a file, or a folder for hub folders), downloaded on first use.

    URL entries: `fetching.download` into `weights_cache()/NAME/FILE` (checked against the entry's md5, size and
    sha256, a pinned `sha256`, the record of an earlier download, and `validate`). Manual entries: the file must
    have been put at that path (checked and recorded the same way); otherwise a `DownloadError` saying where to
    get it and where to put it. Hub entries: `huggingface_hub` at the pinned revision (its cache); `validate` runs
    on the first use of each revision. Downloads off (`AUDIOINTERP_OFFLINE=1` / `HF_HUB_OFFLINE=1`): a file not
    yet cached is a `DownloadError` naming the URL and the path to put it at.
    """
    entry = weights_entry(name)
    if entry.model is None and entry.file and entry.file.endswith(".gz") and validate is None:
        validate = _gzip_check
    if entry.hub_repo:
        return _fetch_hub(entry, validate, progress, sha256)
    dest = cached_path(entry)
    what = f"weights {entry.name!r}"
    if entry.manual:
        if not dest.is_file():
            raise DownloadError(f"{what} has no direct download: get {entry.file} from {entry.manual}, and put it at {dest}")
        key = dest.relative_to(weights_cache()).as_posix()
        if key not in read_records(weights_cache()) and validate is not None and entry.loads:
            try:
                validate(dest)
            except Exception as err:  # noqa: BLE001 (the user's file is named with the cause; it stays where it is)
                raise DownloadError(f"{what}: {dest} does not load: {first_line(err)}") from err
        check_cached(dest, weights_cache(), key, sha256 or entry.sha256, url=entry.where())
        return dest
    assert entry.url is not None
    return download(entry.url, dest, cache=weights_cache(), what=what, sha256=sha256 or entry.sha256, md5=entry.md5,
                    size=entry.size, validate=validate if entry.loads else None, progress=progress)


def _fetch_hub(entry: WeightsEntry, validate: Optional[Callable[[Path], None]], progress: bool,
               sha256: Optional[str] = None) -> Path:
    """A hub entry's file (or folder) through `huggingface_hub`, recorded in the weights cache's `hashes.json`
    under `hub/REPO@REVISION/FILE` once validated; later uses check it against that record (its size always,
    its sha256 when pinned or when the file changed), as for URL entries."""
    try:
        import huggingface_hub
        from huggingface_hub import constants
    except ImportError as err:
        raise DownloadError(f"weights {entry.name!r} come from the Hugging Face hub ({entry.hub_repo}): install "
                            "huggingface_hub") from err
    assert entry.hub_repo is not None
    local_only = offline()
    what = f"weights {entry.name!r} ({entry.where()})"
    try:
        if entry.file:
            found = huggingface_hub.hf_hub_download(entry.hub_repo, entry.file, revision=entry.revision,
                                                    local_files_only=local_only)
        else:
            found = huggingface_hub.snapshot_download(entry.hub_repo, revision=entry.revision, local_files_only=local_only,
                                                      allow_patterns=list(entry.hub_patterns) or None)
    except Exception as err:  # noqa: BLE001 (the hub's errors vary by version; each is named in one line)
        cache = os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE
        if local_only:
            raise DownloadError(f"{what} is not in the Hugging Face cache {cache} and downloads are off "
                                f"({offline_reason()}): run `audiointerp weights fetch {entry.name}` where the hub is "
                                f"reachable (or `huggingface-cli download {entry.hub_repo} --revision {entry.revision}`) "
                                f"with HF_HUB_CACHE={cache}") from err
        raise DownloadError(f"{what}: the hub download failed ({type(err).__name__}: {first_line(err)})") from err
    path = Path(str(found))
    key = hub_key(entry)
    records = read_records(weights_cache())
    if key in records:
        check_cached(hub_target(path), weights_cache(), key, sha256, url=entry.where())
        return path
    if sha256 and file_hash(hub_target(path)) != sha256.lower():
        raise DownloadError(f"{what}: {hub_target(path)} has sha256 {file_hash(hub_target(path))}, expected "
                            f"{sha256.lower()} (pinned)")
    if validate is not None and entry.loads:
        try:
            validate(path)
        except Exception as err:  # noqa: BLE001 (a hub file that does not load is named with the cause)
            raise DownloadError(f"{what}: {path} does not load: {first_line(err)}") from err
    target = hub_target(path)
    stat = target.stat()
    write_record(weights_cache(), key, Record(file_hash(target), stat.st_size, entry.where(), now_utc(),
                                              stat.st_mtime_ns))
    return path


def hub_key(entry: WeightsEntry) -> str:
    """A hub entry's key in the weights cache's `hashes.json`: `hub/REPO@REVISION[/FILE]`."""
    return f"hub/{entry.hub_repo}@{entry.revision or 'main'}/{entry.file or ''}".rstrip("/")


def hub_target(path: Path) -> Path:
    """The file whose hash stands for a hub download: the file itself, or a folder's largest file (its weights)."""
    if path.is_file():
        return path
    files = [p for p in path.rglob("*") if p.is_file()]
    if not files:
        raise DownloadError(f"the hub folder {path} holds no files")
    return max(files, key=lambda p: p.stat().st_size)


@dataclass(frozen=True)
class Verified:
    """What `verify_weights` found for one cached entry: its path, whether it passed, and why not."""

    name: str
    path: Path
    ok: bool
    message: str


def hub_local(entry: WeightsEntry) -> Optional[Path]:
    """A hub entry's local file or folder in the hub cache, or None when it is not there (never downloads)."""
    try:
        import huggingface_hub
    except ImportError:
        return None
    assert entry.hub_repo is not None
    try:
        if entry.file:
            return Path(str(huggingface_hub.hf_hub_download(entry.hub_repo, entry.file, revision=entry.revision,
                                                            local_files_only=True)))
        return Path(str(huggingface_hub.snapshot_download(entry.hub_repo, revision=entry.revision, local_files_only=True,
                                                          allow_patterns=list(entry.hub_patterns) or None)))
    except Exception:  # noqa: BLE001 (not in the hub cache, whatever the hub's error type)
        return None


def verify_weights(validator_for: Callable[[WeightsEntry], Optional[Callable[[Path], None]]],
                   names: Optional[list[str]] = None) -> list[Verified]:
    """Recompute the sha256 of every cached catalog file (or of `names`) against the cache's record, and load it
    with `validator_for(entry)` (the zoo model's check); entries not in the cache are skipped. Nothing is removed:
    a failure is reported with its cause."""
    cache = weights_cache()
    records = read_records(cache)
    found: list[Verified] = []
    for name in names or available_weights():
        entry = weights_entry(name)
        if entry.hub_repo:
            key = hub_key(entry)
            path = hub_local(entry)
            if path is None:
                if key in records:
                    found.append(Verified(name, Path(str(entry.where())), False, "recorded, but no longer in the hub cache"))
                continue
            target = hub_target(path)
            record = records.get(key)
            digest = file_hash(target)
            if record is not None and (digest != record.sha256 or target.stat().st_size != record.size):
                found.append(Verified(name, path, False, f"{target} has sha256 {digest}, {record.sha256} was recorded"))
                continue
        else:
            path = cached_path(entry)
            if not path.is_file():
                continue
            try:
                check_cached(path, cache, path.relative_to(cache).as_posix(), entry.sha256, full=True, url=entry.where())
            except DownloadError as err:
                found.append(Verified(name, path, False, str(err)))
                continue
        check = validator_for(entry) if entry.loads else None
        if check is None and entry.model is None and entry.file and entry.file.endswith(".gz"):
            check = _gzip_check
        try:
            if check is not None:
                check(path)
        except Exception as err:  # noqa: BLE001 (any failure to load is reported with its cause)
            found.append(Verified(name, path, False, f"does not load into {entry.model or 'its reader'}: {first_line(err)}"))
            continue
        how = "hash and load" if check is not None else "hash only"
        found.append(Verified(name, path, True, f"ok ({how})"))
    return found
