"""Benchmark `audiointerp analyze rsa`: time and peak memory against the number of sounds.

For each N, a store of one layer (N sounds x `--dims` values, three material classes plus noise) is written,
then `audiointerp analyze rsa STORE --target factor:material` runs in a fresh process, whose own peak RSS
(getrusage) and wall time are recorded. A full N x N float64 RDM would take 8 N^2 bytes (3.2 GB at N = 20,000);
the blockwise computation should stay far below that. Prints a table and writes benchmarks/results/rsa.json.

    python benchmarks/bench_rsa.py [--sounds 5000 20000] [--dims 512] [--bootstrap 1000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import environment, write_results

from audiointerp.datasets.store import write_store

RESULTS_PATH = Path(__file__).resolve().parent / "results" / "rsa.json"
CHILD = ("import resource, sys; from audiointerp.cli import main; code = main(sys.argv[1:]); "
         "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(code)")


def make_store(folder: Path, sounds: int, dims: int) -> Path:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, sounds)
    x = (rng.normal(size=(sounds, dims)) + 0.5 * rng.normal(size=(3, dims))[labels]).astype(np.float32)
    return write_store(folder, {"layer": x}, {"path": [f"s{i:06d}.wav" for i in range(sounds)],
                                              "material": [f"m{v}" for v in labels]}, chunk_size=4096)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sounds", type=int, nargs="+", default=[5000, 20000])
    parser.add_argument("--dims", type=int, default=512, help="values per sound in the layer")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--block-size", type=int, default=1024)
    args = parser.parse_args()
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for sounds in args.sounds:
            store = make_store(Path(tmp) / f"store-{sounds}", sounds, args.dims)
            command = ["analyze", "rsa", str(store), "--target", "factor:material", "--bootstrap", str(args.bootstrap),
                       "--block-size", str(args.block_size), "--tracking", "none", "--quiet", "--out", str(Path(tmp) / f"out-{sounds}")]
            started = time.perf_counter()
            result = subprocess.run([sys.executable, "-c", CHILD, *command], check=True, capture_output=True, text=True)
            seconds = time.perf_counter() - started
            peak = next(int(line.split()[1]) for line in result.stdout.splitlines() if line.startswith("PEAK_RSS_KB")) / 1024
            pairs = sounds * (sounds - 1) // 2
            rows.append({"sounds": sounds, "pairs": pairs, "seconds": seconds, "peak_rss_mib": peak,
                         "full_rdm_mib": 8 * sounds**2 / 2**20, "pairs_per_second": pairs / seconds,
                         "output": [line for line in result.stdout.splitlines() if "Spearman" in line]})
    print(f"{'sounds':>7} {'pairs':>12} {'seconds':>8} {'peak RSS MiB':>13} {'one full RDM MiB':>17}")
    for row in rows:
        print(f"{row['sounds']:7d} {row['pairs']:12d} {row['seconds']:8.1f} {row['peak_rss_mib']:13.0f} {row['full_rdm_mib']:17.0f}")
    write_results(RESULTS_PATH, {"dims": args.dims, "bootstrap": args.bootstrap, "block_size": args.block_size,
                                 "rows": rows, "environment": environment(load_before)})
    print(f"wrote {RESULTS_PATH}")


if __name__ == "__main__":
    main()
