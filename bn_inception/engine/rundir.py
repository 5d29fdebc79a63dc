"""A run directory has one owner: the lock, the files written once it is held, and the clean-up of saves a
kill interrupted. The lock is the project's one (``bn_inception/files.py``): a crashed, dead or
restarted holder is taken over with one log line, a live one is named.
"""

from __future__ import annotations

import logging
from pathlib import Path

from bn_inception.files import STALE_AFTER_S, LockFile, describe

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"


class RunDirBusy(RuntimeError):
    """Another process holds the run directory; the message names it and says what to do."""


class RunLock(LockFile):
    """``with RunLock(run_dir):`` makes this process the run directory's only writer, or raises
    :class:`RunDirBusy` without changing anything in the directory."""

    def __init__(self, run_dir: str | Path, stale_after_s: float = STALE_AFTER_S) -> None:
        super().__init__(Path(run_dir) / LOCK_NAME, stale_after_s)
        self.dir = Path(run_dir)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        holder = self.try_acquire()
        if holder is not None:
            raise RunDirBusy(
                f"run directory {self.dir} is in use by {describe(holder)}; wait for that run to end or stop "
                f"it, or use another directory (hydra.run.dir=... or another seed)"
            )


def remove_interrupted_saves(run_dir: Path) -> list[Path]:
    """Delete the temporary files of saves a kill interrupted (``.<name>.*.tmp`` and stray lock temps);
    call it holding the lock. Returns what was removed."""
    removed = []
    candidates = [*run_dir.glob(".*.tmp"), *(run_dir / "checkpoints").glob(".*.tmp")]
    candidates += [p for p in run_dir.glob(f"{LOCK_NAME}.*") if p.name != LOCK_NAME]
    for path in candidates:
        try:
            path.unlink()
            removed.append(path)
        except OSError:
            pass
    return removed


def attach_log_file(path: Path) -> logging.Handler:
    """Send the root logger's records to ``path`` too (appended), formatted as on the console."""
    handler = logging.FileHandler(path, mode="a")
    console = next((h for h in logging.getLogger().handlers if h.formatter is not None), None)
    handler.setFormatter(
        console.formatter
        if console
        else logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    )
    logging.getLogger().addHandler(handler)
    return handler
