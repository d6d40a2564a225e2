"""The output folder's lock file: shards share it, a plain run and a reindex hold it alone.

Shards of one manifest run at the same time on disjoint jobs, so they take the lock shared;
a plain `run` (which would redo a running shard's jobs) and `reindex` (which would index a
half-finished merge) take it exclusively, and each side is refused at once while the other
holds it. `flock(2)` locks, as `filelock.FileLock` takes on Unix (so a run of an older
nst-batch and this one still keep each other out): the kernel drops them when the process
dies, kill -9 included, so a stale lock file never blocks anything. On NFS, Linux turns
`flock` into a whole-file POSIX lock that the server sees, so shards on several nodes share
it too.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import NSTError, OutputError

LOCK_NAME = ".nst-batch.lock"
_NO_LOCKS = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP)   # the filesystem cannot lock at all
log = logging.getLogger(__name__)


class BusyError(NSTError):
    """Another run holds the output folder."""


@contextmanager
def hold_output(out: Path, *, shared: bool = False) -> Iterator[None]:
    """Use of an output folder: exclusive, or `shared` with other shards of a manifest.

    Refuses at once (BusyError, one line) instead of waiting or racing the holder."""
    path = out / LOCK_NAME
    try:
        fd = _open_lock_file(path)
    except OSError as err:   # a full disk or a read-only folder
        raise OutputError(f"cannot create the lock file {path}: {err.strerror or err}") from None
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise BusyError(_busy_message(out, shared)) from None
            if not (shared and err.errno in _NO_LOCKS):
                raise OutputError(f"cannot lock {path}: {err.strerror or err}") from None
            # A filesystem without locks (Lustre mounted without flock): shards ran unlocked
            # before they shared the lock, and must not stop working there.
            log.warning("cannot lock %s (%s); this shard runs without the lock: do not start a plain "
                        "run or reindex of the folder until every shard has ended", path, err.strerror or err)
        yield
    finally:
        os.close(fd)   # closing the only descriptor releases the lock


def _open_lock_file(path: Path) -> int:
    # Never truncated nor deleted: a process that opens it always locks the file others lock.
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


def _busy_message(out: Path, shared: bool) -> str:
    if shared:
        return (f"a plain nst-batch run or reindex is using {out} (lock {LOCK_NAME}); wait for it to "
                "finish before starting shards, or choose another output folder")
    # A shard is a run too: one message whichever holds it, as before shards took the lock.
    return (f"another nst-batch run is using {out} (lock {LOCK_NAME}); wait for it to finish or "
            "choose another output folder")
