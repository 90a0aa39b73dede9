#!/usr/bin/env bash
# The GPU check, as one command for a lent GPU machine that reaches no network:
#
#     bash scripts/gpu_check.sh [options of scripts/gpu_check.py]
#     bash scripts/gpu_check.sh --json "$OUT/gpu_check.json"      # what docs/PERFORMANCE.md ran
#
# Once beforehand, on a machine with network, put the wheels that a bare CUDA image lacks in
# .whl/ (git ignores it; send it along: with the device tool, `carry: [".whl"]`):
#
#     bash scripts/gpu_check.sh --prepare
#
# What it assumes on the GPU machine:
#   * a Python (3.11 or 3.12) with a CUDA build of torch and transformers >= 5, accelerate,
#     numpy, pandas, pyarrow, PyYAML, Pillow, safetensors and tqdm: it takes $PYTHON, else
#     .venv/bin/python, else python3, the first whose torch sees a GPU (`--device cpu` accepts
#     one without);
#   * the project's other imports (diffusers, kedro, parse, soundfile + cffi + pycparser,
#     soxr) are there or in .wheel files under .whl/: the missing ones are installed from
#     there into /tmp/wavy-site, without an index;
#   * the project runs from src/ through PYTHONPATH: nothing is installed into the image, no
#     virtual environment is made, nothing is downloaded, model weights are random.
set -euo pipefail
cd "$(dirname "$0")/.."

# module:wheel pairs, pinned as in the project's environment
WHEELS=(diffusers:diffusers==0.42.1 kedro:kedro==1.7.0 parse:parse==1.22.4
    soundfile:soundfile==0.14.0 cffi:cffi==2.1.1 pycparser:pycparser==3.12 soxr:soxr==1.1.0)

if [[ "${1:-}" == "--prepare" ]]; then
    py=${PYTHON:-python3}
    mkdir -p .whl
    "$py" -m pip download --quiet --no-deps --only-binary=:all: -d .whl \
        --python-version "${WHEEL_PYTHON:-3.12}" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        "${WHEELS[@]#*:}"
    ls -l .whl
    exit 0
fi

want_cpu=0
for arg in "$@"; do [[ "$arg" == cpu ]] && want_cpu=1; done
py=""
for candidate in "${PYTHON:-}" .venv/bin/python python3; do
    [[ -n "$candidate" ]] && command -v "$candidate" >/dev/null 2>&1 || continue
    if "$candidate" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() or $want_cpu else 1)" \
        2>/dev/null; then
        py=$candidate
        break
    fi
done
if [[ -z "$py" ]]; then
    echo "gpu_check: no Python whose torch sees a GPU (set PYTHON=..., or pass --device cpu)" >&2
    exit 2
fi

missing() {
    "$py" -c 'import importlib.util, sys
print(" ".join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))' "$@"
}
lacking=$(missing "${WHEELS[@]%%:*}")
if [[ -n "$lacking" ]]; then
    site=/tmp/wavy-site
    for pair in "${WHEELS[@]}"; do
        module=${pair%%:*} name=${pair#*:}
        [[ " $lacking " == *" $module "* ]] || continue
        wheel=$(ls .whl/"${name%%==*}"-*.whl 2>/dev/null | head -n 1 || true)
        [[ -n "$wheel" ]] && "$py" -m pip install --quiet --no-index --no-deps --no-compile \
            --no-cache-dir --target "$site" "$wheel"
    done
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
lacking=$(missing "${WHEELS[@]%%:*}" transformers accelerate pandas pyarrow yaml PIL safetensors)
if [[ -n "$lacking" ]]; then
    echo "gpu_check: $py lacks: $lacking (run 'bash scripts/gpu_check.sh --prepare' where" \
        "there is network and send .whl/ along)" >&2
    exit 2
fi

export HF_HUB_OFFLINE=1 KEDRO_DISABLE_TELEMETRY=true TOKENIZERS_PARALLELISM=false
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
command -v nvidia-smi >/dev/null 2>&1 &&
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader || true
exec "$py" scripts/gpu_check.py "$@"
