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
cleanup() { [ "$cluster" = 1 ] && bash slurm/local_cluster.sh down >/dev/null 2>&1; }
trap cleanup EXIT

"$VENV/bin/pytest" -q -p no:cacheprovider "$@"
rc=$?
[ $rc = 5 ] && { echo "run_tests: pytest collected no tests" >&2; exit 1; }
exit $rc
