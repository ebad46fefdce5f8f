"""Benchmark `audiointerp extract` over clips of mixed lengths against clips of one length (issue 14, point 3).

Two manifests of paths only are generated once (16 kHz, 16-bit WAV, a decaying tone plus noise): N clips of
lengths drawn uniformly from 0.3 s to 12 s (seeded), and N clips of 5 s. Each is extracted by a fresh
`audiointerp extract` process (a random-weight `small_cnn`, `--pooling time`, the default batch size), and the
fixed-length set once more with `--batch-size 1` (`fixed_batch1`: clips of all-different lengths share no batch,
so this separates the cost of running clips one by one from the cost of their lengths); each process's wall time
and peak RSS (its own getrusage) are recorded (`--repeats` interleaved rounds: the best time and the largest peak),
side by side, with the ratios mixed / fixed and the throughput in
seconds of audio per second. Prints a table and writes benchmarks/results/extract_lengths.json.

    python benchmarks/bench_extract_lengths.py [--clips 1000] [--model small_cnn] [--layers block1,block2,block3,block4,embedding,logits]
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
import soundfile as sf
from common import environment, write_results

RESULTS_PATH = Path(__file__).resolve().parent / "results" / "extract_lengths.json"
RATE = 16000
CHILD = ("import resource, sys; from audiointerp.cli import main; code = main(sys.argv[1:]); "
         "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(code)")


def run_child(args: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of `audiointerp ARGS` in a fresh process, which reports its own peak."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode:
        raise SystemExit(f"audiointerp {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    peak_kb = next(int(line.split()[1]) for line in result.stdout.splitlines() if line.startswith("PEAK_RSS_KB"))
    return seconds, peak_kb / 1024.0


def write_clips(folder: Path, seconds: np.ndarray) -> Path:
    """WAV files of the given lengths and a manifest with only a `path` column; returns the manifest."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    lines = ["path"]
    for k, length in enumerate(seconds):
        n = int(round(length * RATE))
        t = np.arange(n) / RATE
        clip = 0.3 * np.sin(2 * np.pi * (150 + k % 400) * t) * np.exp(-0.5 * t) + 0.02 * rng.standard_normal(n)
        sf.write(folder / f"clip{k:05d}.wav", clip.astype(np.float32), RATE, subtype="PCM_16")
        lines.append(f"clip{k:05d}.wav")
    (folder / "manifest.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder / "manifest.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=1000)
    parser.add_argument("--model", default="small_cnn")
    parser.add_argument("--layers", default="block1,block2,block3,block4,embedding,logits")
    parser.add_argument("--fixed-seconds", type=float, default=5.0)
    parser.add_argument("--shortest", type=float, default=0.3)
    parser.add_argument("--longest", type=float, default=12.0)
    parser.add_argument("--batch-size", type=int, default=16, help="extract's default")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of every case, interleaved; the best is kept")
    args = parser.parse_args()
    load = os.getloadavg()
    mixed_seconds = np.random.default_rng(0).uniform(args.shortest, args.longest, args.clips)
    cases = {"mixed": mixed_seconds, "fixed": np.full(args.clips, args.fixed_seconds)}
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        manifests = {name: write_clips(Path(tmp) / name, seconds) for name, seconds in cases.items()}
        runs = [("mixed", "mixed", args.batch_size), ("fixed", "fixed", args.batch_size), ("fixed_batch1", "fixed", 1)]
        times: dict[str, list[float]] = {name: [] for name, _, _ in runs}
        peaks: dict[str, list[float]] = {name: [] for name, _, _ in runs}
        for repeat in range(args.repeats):  # interleaved, so that a change of machine load affects every case alike
            for name, data, batch in runs:
                out = Path(tmp) / f"store-{name}-{repeat}"
                seconds, peak = run_child(["extract", "--model", args.model, "--num-classes", "10", "--data",
                                           str(manifests[data]), "--layers", args.layers, "--pooling", "time", "--out",
                                           str(out), "--batch-size", str(batch), "--quiet"])
                times[name].append(seconds)
                peaks[name].append(peak)
                print(f"  round {repeat + 1}: {name} {seconds:.1f} s, peak RSS {peak:.1f} MiB", flush=True)
        for name, data, batch in runs:
            audio = float(cases[data].sum())
            seconds, peak = min(times[name]), max(peaks[name])
            rows[name] = {"clips": args.clips, "batch_size": batch, "audio_seconds": audio, "seconds": seconds,
                          "seconds_all": times[name], "peak_rss_mib": peak, "peak_rss_mib_all": peaks[name],
                          "clips_per_second": args.clips / seconds, "audio_seconds_per_second": audio / seconds}
            print(f"{name:>12} (batch {batch:>2}): {args.clips} clips, {audio:8.0f} s of audio  {seconds:7.1f} s (best "
                  f"of {args.repeats})  {args.clips / seconds:6.1f} clips/s  {audio / seconds:6.1f} audio s/s  "
                  f"peak RSS {peak:7.1f} MiB", flush=True)
    ratios = {"time": rows["mixed"]["seconds"] / rows["fixed"]["seconds"],
              "peak_rss": rows["mixed"]["peak_rss_mib"] / rows["fixed"]["peak_rss_mib"],
              "time_per_audio_second": (rows["mixed"]["seconds"] / rows["mixed"]["audio_seconds"])
              / (rows["fixed"]["seconds"] / rows["fixed"]["audio_seconds"]),
              "time_per_audio_second_vs_fixed_batch1": (rows["mixed"]["seconds"] / rows["mixed"]["audio_seconds"])
              / (rows["fixed_batch1"]["seconds"] / rows["fixed_batch1"]["audio_seconds"])}
    print(f"mixed / fixed: time {ratios['time']:.2f}, peak RSS {ratios['peak_rss']:.2f}, "
          f"time per second of audio {ratios['time_per_audio_second']:.2f} "
          f"({ratios['time_per_audio_second_vs_fixed_batch1']:.2f} against fixed clips one by one)")
    write_results(RESULTS_PATH, {"benchmark": "extract_lengths", "model": args.model, "layers": args.layers,
                                 "pooling": "time", "batch_size": args.batch_size,
                                 "repeats": args.repeats, "mixed_seconds": [args.shortest, args.longest], "fixed_seconds": args.fixed_seconds,
                                 "runs": rows, "ratios": ratios, "environment": environment(load)})


if __name__ == "__main__":
    main()
