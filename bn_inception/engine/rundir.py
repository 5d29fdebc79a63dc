"""A run directory has one owner: the lock, the files written once it is held, and the clean-up of saves a
kill interrupted.

The lock is hand-written: ``fcntl``/``flock`` locks are advisory and need lockd on NFSv3, and
``filelock.SoftFileLock`` cannot tell a dead holder from a live one. This is the portable scheme (see
docs/design.md): the lock file is created by ``os.link`` of a fully written temporary file (atomic, also
on NFS), holds the owner's host, pid and start time, and is touched every :data:`HEARTBEAT_S` seconds. A
lock is stale, and is taken over with one log line, when its process is dead (same host), or when its
heartbeat is older than :data:`STALE_AFTER_S` (any host: the holder's node is gone).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
HEARTBEAT_S = 30.0  # how often the holder touches the lock file
STALE_AFTER_S = 300.0  # a lock whose heartbeat is older than this has no live holder (10 missed beats)


class RunDirBusy(RuntimeError):
    """Another process holds the run directory; the message names it and says what to do."""


class RunLock:
    """``with RunLock(run_dir):`` makes this process the run directory's only writer, or raises
    :class:`RunDirBusy` without changing anything in the directory."""

    def __init__(self, run_dir: str | Path, stale_after_s: float = STALE_AFTER_S) -> None:
        self.dir, self.path = Path(run_dir), Path(run_dir) / LOCK_NAME
        self.stale_after_s = stale_after_s
        self.me = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": time.time(),
            "token": uuid.uuid4().hex,
        }
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        for _ in range(5):  # a few rounds: another starter may take or drop the lock between our looks
            if self._create():
                self._start_heartbeat()
                return
            holder = self._read()
            if holder is None:  # half-written or just removed: look again
                time.sleep(0.05)
                continue
            reason = self._stale(holder)
            if reason is None:
                raise RunDirBusy(
                    f"run directory {self.dir} is in use by host {holder.get('host')} "
                    f"pid {holder.get('pid')} "
                    f"(since {_when(holder.get('started'))}); wait for that run to end or stop it, "
                    f"or use another directory (hydra.run.dir=... or another seed)"
                )
            log.warning("taking over the lock of %s: %s", self.dir, reason)
            self._remove_if(holder)
        raise RunDirBusy(f"could not lock {self.dir}: the lock file {self.path} keeps changing; try again")

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
        self._remove_if(self.me)

    # -------------------------------------------------------------------------------- internals

    def _create(self) -> bool:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f"{LOCK_NAME}.{self.me['token']}"
        tmp.write_text(json.dumps(self.me))
        try:
            os.link(tmp, self.path)  # atomic, fails if the lock exists; also on NFS
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def _read(self) -> dict[str, Any] | None:
        try:
            holder = json.loads(self.path.read_text())
            holder["mtime"] = self.path.stat().st_mtime
            return holder
        except (OSError, ValueError):
            return None

    def _stale(self, holder: dict[str, Any]) -> str | None:
        """Why ``holder`` no longer holds the lock, or None if it may still."""
        age = time.time() - holder["mtime"]
        if holder.get("host") == self.me["host"] and not _alive(int(holder.get("pid", -1))):
            return f"its process {holder.get('pid')} on this host is gone"
        if age > self.stale_after_s:
            return f"its holder on {holder.get('host')} has not touched it for {age:.0f} s"
        return None

    def _remove_if(self, holder: dict[str, Any]) -> None:
        current = self._read()
        if current is not None and current.get("token") == holder.get("token"):
            self.path.unlink(missing_ok=True)

    def _start_heartbeat(self) -> None:
        def beat() -> None:
            while not self._stop.wait(HEARTBEAT_S):
                try:
                    os.utime(self.path)
                except OSError:
                    return

        self._beat = threading.Thread(target=beat, name="run-lock-heartbeat", daemon=True)
        self._beat.start()


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _when(timestamp: Any) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(timestamp)))
    except (TypeError, ValueError):
        return "an unknown time"


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


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` through a temporary file in the same directory and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
