"""One writer per output directory. A run that writes a directory holds an exclusive OS lock
on `<dir>/.rlaif.lock` for its whole length; a second run into the same directory stops at
once, naming the process that holds it. The operating system drops the lock when its process
ends, however it ends (a SIGKILL included), so nothing stale is left behind. A disk that fills while the run writes stops it with
`DiskFull`, one line, rather than a traceback."""

from __future__ import annotations

import errno
import fcntl
import functools
import os
import shlex
import shutil
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from rlaif.errors import UserError

LOCK_FILE = ".rlaif.lock"
_held: set[Path] = set()  # directories this process holds: a run inside a run (an experiment's compare) may write into one of them


class DirectoryInUse(UserError):
    """Another process is writing the directory."""


class DiskFull(UserError):
    """The disk filled while a run wrote its directory."""


FULL = (errno.ENOSPC, errno.EDQUOT)


def is_disk_full(e: BaseException) -> bool:
    """Whether an OSError or an SQLite error says the disk (or the quota) is full."""
    return getattr(e, "errno", None) in FULL or "database or disk is full" in str(e)


def check_output_directory(directory: str | Path) -> None:
    """Check, without making anything, that `directory` is or can be made a directory to write
    into: a regular file in its place or above it, or a place this process cannot write, is a
    one-line error, raised before any model loads."""
    path = Path(directory).absolute()
    if path.exists() and not path.is_dir():
        raise UserError(f"{directory}: a file is in the way: the output must be a directory (give another path)")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise UserError(f"{directory}: {existing} is a file, so no directory can be made under it (give another path)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{directory}: cannot write an output directory here ({existing} is not writable)")


def output_directory(directory: str | Path) -> bool:
    """Make `directory` to write into (checked first: `check_output_directory`); returns whether it was made."""
    check_output_directory(directory)
    created = not Path(directory).exists()
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        if is_disk_full(e):
            raise DiskFull(f"{directory}: the disk is full ({e.strerror})") from None
        raise UserError(f"{directory}: cannot write an output directory here ({e.strerror or e})") from None
    return created


@contextmanager
def writing(directory: str | Path) -> Iterator[Path]:
    """Hold `directory` (created if missing) for writing until the block ends; raise
    `DirectoryInUse` at once if another process holds it."""
    path = Path(directory).resolve()
    if path in _held:
        yield path
        return
    created = output_directory(directory)
    try:
        with open(path / LOCK_FILE, "a+") as fh:  # closing the file releases the lock
            yield from _hold(fh, path, directory)
    finally:
        if created and [p.name for p in path.iterdir()] == [LOCK_FILE]:  # a run that stopped before writing leaves nothing behind
            shutil.rmtree(path, ignore_errors=True)


def _hold(fh, path: Path, directory: str | Path) -> Iterator[Path]:
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "another process"
        raise DirectoryInUse(f"{directory}: another rlaif run is writing this directory ({holder}); "
                             "wait for it to end, or give this run another output directory") from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()}: {_command()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    fh.flush()
    _held.add(path)
    try:
        yield path
    except (OSError, sqlite3.OperationalError) as e:
        if is_disk_full(e):
            # Every file is written whole or cut back on the next run (pairs.jsonl to its last
            # recorded length, checkpoints renamed into place), so a rerun loses nothing.
            raise DiskFull(f"{directory}: the disk is full ({e}); free some space and run the same command again: "
                           "what was written before this point is kept") from None
        raise
    finally:
        _held.discard(path)


def holder(directory: str | Path) -> str | None:
    """What another process writing `directory` says of itself (its pid and command), or None
    when no other process holds it."""
    path = Path(directory).resolve()
    if path in _held or not (path / LOCK_FILE).exists():
        return None
    with open(path / LOCK_FILE) as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return fh.read().strip() or "another process"
        fcntl.flock(fh, fcntl.LOCK_UN)
    return None


def _command() -> str:
    """This process's command line, as typed (`rlaif label ...`)."""
    # the `rlaif` script, or python -m rlaif.cli
    ours = os.path.basename(sys.argv[0]) == "rlaif" or sys.argv[0].endswith(os.path.join("rlaif", "cli.py"))
    return shlex.join(["rlaif", *sys.argv[1:]] if ours else sys.argv)


def writes_into(output_of: Callable[..., str | Path | None]):
    """Decorate a run: it holds the directory `output_of(its arguments)` names for its whole
    length (None: the run writes nothing, and takes no lock)."""
    def decorate(run):
        @functools.wraps(run)
        def held(*args, **kwargs):
            directory = output_of(*args, **kwargs)
            with writing(directory) if directory is not None else nullcontext():
                return run(*args, **kwargs)
        return held
    return decorate
