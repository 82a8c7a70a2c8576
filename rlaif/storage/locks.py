"""One writer per output directory. A run that writes a directory holds an exclusive OS lock
on `<dir>/.rlaif.lock` for its whole length; a second run into the same directory stops at
once, naming the process that holds it. The operating system drops the lock when its process
ends, however it ends (a SIGKILL included), so nothing stale is left behind."""

from __future__ import annotations

import fcntl
import os
import shlex
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rlaif.errors import UserError

LOCK_FILE = ".rlaif.lock"
_held: set[Path] = set()  # directories this process holds: a run inside a run (an experiment's compare) may write into one of them


class DirectoryInUse(UserError):
    """Another process is writing the directory."""


@contextmanager
def writing(directory: str | Path) -> Iterator[Path]:
    """Hold `directory` (created if missing) for writing until the block ends; raise
    `DirectoryInUse` at once if another process holds it."""
    path = Path(directory).resolve()
    if path in _held:
        yield path
        return
    path.mkdir(parents=True, exist_ok=True)
    fh = open(path / LOCK_FILE, "a+")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise DirectoryInUse(f"{directory}: another rlaif run is writing this directory ({holder}); "
                                 "wait for it to end, or give this run another output directory") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}, `{shlex.join(['rlaif', *sys.argv[1:]]) if sys.argv[0].endswith('rlaif') else shlex.join(sys.argv)}`, "
                 f"since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        fh.flush()
        _held.add(path)
        try:
            yield path
        finally:
            _held.discard(path)
    finally:
        fh.close()  # closing the file releases the lock
