"""Moved to :mod:`mathfirst_hpc.preemption` (below both ``run`` and ``launch``). This name stays for code and
pickles that still import ``mathfirst_hpc.launch.preemption``: it is the very same module object, so the stop
flag it holds is shared."""

import sys

from .. import preemption as _preemption

sys.modules[__name__] = _preemption
