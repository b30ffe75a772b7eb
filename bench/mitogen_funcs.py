"""Functions called inside Mitogen children by mitogen_bench.py.

Mitogen can only call module-level functions of a module the child can
import. The child does not have this directory on its sys.path, so the
master's ModuleResponder ships this file's source on first use (which is
part of what the bootstrap benchmark measures). Keep it tiny and stdlib-only.
"""

import os

_BLOBS = {}


def noop():
    return None


def getpid():
    return os.getpid()


def blob(n):
    """Return a bytes object of n bytes (cached, so only transfer is timed)."""
    b = _BLOBS.get(n)
    if b is None:
        b = _BLOBS[n] = b'\x5a' * n
    return b


def drop_blobs():
    _BLOBS.clear()
