"""Benchmark: one epoch of ManifestDataset reads without the audio cache vs with it (building, then warm).

Generates N one-second WAVs at 44.1 kHz in a temporary folder, reads them at 16 kHz as 1 s training
crops, prints a side-by-side table and writes ``benchmarks/results/audio_cache.json``. Reads run in one
process with one torch thread by default, as inside a DataLoader worker (torch's multi-threaded resampling
of single clips is slower, and much slower on a busy machine). The cache build decodes with a thread pool.

    python benchmarks/bench_audio_cache.py [--files 300] [--seconds 1.0] [--sample-rate 16000]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from audiointerp.datasets.manifest import ManifestDataset, read_manifest  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "audio_cache.json"


def make_files(root: Path, n: int, seconds: float, sr: int) -> Path:
    """Write ``n`` noisy tones as 16-bit WAVs and a generic manifest; return the manifest path."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    rows = []
    for k in range(n):
        freq = rng.uniform(100, 4000)
        data = 0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(t.size)
        name = f"clip{k:04d}.wav"
        sf.write(str(root / name), data.astype(np.float32), sr, subtype="PCM_16")
        rows.append([name, f"class{k % 10}"])
    with open(root / "manifest.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label"])
        w.writerows(rows)
    return root / "manifest.csv"


def epoch(ds: ManifestDataset, number: int) -> float:
    """Seconds to read every item once (sequentially, as a single DataLoader worker would)."""
    ds.set_epoch(number)
    start = time.perf_counter()
    checksum = 0.0
    for i in range(len(ds)):
        checksum += float(ds[i]["audio"][0, 0])
    elapsed = time.perf_counter() - start
    assert np.isfinite(checksum)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=1.0, help="length of each generated file")
    parser.add_argument("--file-rate", type=int, default=44100)
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch intra-op threads (1, as inside a DataLoader worker; 0 keeps torch's default)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)

    with tempfile.TemporaryDirectory(prefix="bench_audio_cache_") as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "data").mkdir()
        manifest_csv = make_files(tmp_path / "data", args.files, args.seconds, args.file_rate)
        manifest = read_manifest(manifest_csv)
        common = dict(sample_rate=args.sample_rate, seconds=args.seconds, train=True, progress=False)

        t0 = time.perf_counter()
        plain = ManifestDataset(manifest, **common)
        plain_init = time.perf_counter() - t0
        plain_epoch = epoch(plain, 0)

        cache_dir = tmp_path / "cache"
        t0 = time.perf_counter()
        cold = ManifestDataset(manifest, cache_dir=cache_dir, **common)
        build = time.perf_counter() - t0
        assert cold.cache_built
        cold_epoch = epoch(cold, 0)

        t0 = time.perf_counter()
        warm = ManifestDataset(manifest, cache_dir=cache_dir, **common)
        warm_init = time.perf_counter() - t0
        assert not warm.cache_built
        warm_epoch = epoch(warm, 1)
        cache_bytes = sum(p.stat().st_size for p in cache_dir.iterdir())

    phases = [
        ("no cache", plain_init, plain_epoch),
        ("cache, 1st epoch (build)", build, cold_epoch),
        ("cache, 2nd epoch (new instance)", warm_init, warm_epoch),
    ]
    base = plain_init + plain_epoch
    print(
        f"{args.files} x {args.seconds:g} s WAV @ {args.file_rate} Hz -> {args.sample_rate} Hz, mono, "
        f"1 process, torch threads {torch.get_num_threads()}"
    )
    print(f"{'phase':34s} {'setup s':>9s} {'epoch s':>9s} {'total s':>9s} {'files/s':>9s} {'speed-up':>9s}")
    rows = []
    for name, setup, ep in phases:
        total = setup + ep
        rate = args.files / total
        print(f"{name:34s} {setup:9.3f} {ep:9.3f} {total:9.3f} {rate:9.0f} {base / total:8.1f}x")
        rows.append(
            {
                "phase": name,
                "setup_s": setup,
                "epoch_s": ep,
                "total_s": total,
                "files_per_s": rate,
                "speedup_vs_no_cache": base / total,
            }
        )
    ratio = plain_epoch / warm_epoch
    print(f"epoch read time, no cache / warm cache: {ratio:.1f}x; cache size {cache_bytes / 1e6:.1f} MB")

    result = {
        "benchmark": "audio_cache",
        "files": args.files,
        "seconds_per_file": args.seconds,
        "file_sample_rate": args.file_rate,
        "sample_rate": args.sample_rate,
        "torch_threads": torch.get_num_threads(),
        "phases": rows,
        "epoch_ratio_no_cache_over_warm": plain_epoch / warm_epoch,
        "cache_bytes": cache_bytes,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "platform": platform.platform(),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
