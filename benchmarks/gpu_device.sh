#!/usr/bin/env bash
# The GPU benchmark on the device machine, as one command from the repository root:
#
#     bash benchmarks/gpu_device.sh [extra benchmarks/gpu.py options]
#
# The machine has Python 3.12 with torch, torchaudio, accelerate, h5py, scikit-learn, scipy, safetensors, matplotlib,
# numpy, tqdm, pyyaml, einops, timm, huggingface-hub and transformers, and reaches no package registry: the few
# pure-Python (and soundfile/cffi) wheels the benchmark also needs travel in .whl/ (git-ignored; omegaconf, soundfile,
# cffi, pycparser, hear21passt, audio-encoders-pytorch, einops-exts) and are installed into /tmp/site. The project
# runs from the source tree. Writes $OUT/gpu.json and $OUT/gpu.log (OUT defaults to benchmarks/results) and exits
# with the benchmark's status (0 when every fit succeeded; 124 when it ran over BENCH_TIMEOUT seconds).
set -uo pipefail

cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results}"
mkdir -p "$OUT"
SITE=/tmp/site

shopt -s nullglob
wheels=(.whl/*.whl)
if ((${#wheels[@]})); then
    if ! python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${wheels[@]}"; then
        echo "pip could not install the wheels of .whl/: unpacking them into $SITE instead" >&2
        for wheel in "${wheels[@]}"; do
            python3 -m zipfile -e "$wheel" "$SITE" || { echo "cannot unpack $wheel" >&2; exit 3; }
        done
    fi
else
    echo "no wheels in .whl/: expecting omegaconf, soundfile, hear21passt and audio-encoders-pytorch installed" >&2
fi
export PYTHONPATH="$SITE:src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

nvidia-smi 2>&1 | tee "$OUT/gpu.log"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpus', torch.cuda.device_count())" \
    2>&1 | tee -a "$OUT/gpu.log"
timeout "${BENCH_TIMEOUT:-420}" python3 benchmarks/gpu.py --out "$OUT/gpu.json" "$@" 2>&1 | tee -a "$OUT/gpu.log"
status=${PIPESTATUS[0]}
echo "benchmarks/gpu.py exited with status $status" | tee -a "$OUT/gpu.log"
exit "$status"
