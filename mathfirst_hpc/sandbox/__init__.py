"""Code-execution sandbox: per-execution isolation (bubblewrap + rlimits + unprivileged uids), an asyncio HTTP
queue service, and an async batched client. See isolation.py for what is and is not isolated."""

from .types import STATUSES, ExecJob, ExecResult

__all__ = ["STATUSES", "ExecJob", "ExecResult"]
