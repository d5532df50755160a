"""The torch.distributed bootstrap (``init_distributed``, ``detect``, ``DistEnv``), importable from below both
``run`` and ``launch``. Its code lives in ``launch/distributed.py`` (the stdlib only; it imports nothing above
itself); this name is the very same module object."""

import sys

from .launch import distributed as _distributed

sys.modules[__name__] = _distributed
