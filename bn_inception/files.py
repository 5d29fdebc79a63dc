"""The project's one atomic writer and one lock.

``write_atomically``: a reader sees the old file or the new one, never a part; a crash or a full disk
leaves the old file and at most a temporary one next to it (temp file in the same folder, fsync,
``os.replace``, fsync of the folder: the rename is durable only then). The file's mode follows the umask
(mkstemp's 0600 would hide results from colleagues on shared storage).

``LockFile``: the owner of a run directory (``engine/trainer.py``) and the one builder of a tree index
(``data/index.py``), on local disks and on NFS, across nodes and container restarts. Hand-written because
the alternatives fail our cases: ``fcntl``/``flock`` locks are advisory and need lockd on NFSv3; filelock
4.3's soft locks never break an empty lock file (the state a node crash can leave) and take over a holder on
another host only after watching its file unchanged for a whole lease.

The lock file is a record (host, pid, the process's start time, a token) written to a temporary file,
fsynced, and linked into place with ``os.link`` (atomic, also on NFS): a complete record or no file. Its
holder touches it every :data:`HEARTBEAT_S`. It is stale, and taken over with one log line, when

- it is not a record (empty or garbage: a crash before the data reached the disk, or damage);
- its holder was on this host and that process is gone, or its pid now belongs to another process that
  started later, this one included (a restarted container, where the job is often pid 1 again);
- its heartbeat is older than ``stale_after_s`` and its holder cannot be checked (another host: the node
  is gone). A holder on this host that is alive holds it, however long it was stopped (Ctrl-Z).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

log = logging.getLogger(__name__)

HEARTBEAT_S = 30.0  # how often the holder touches the lock file
STALE_AFTER_S = 300.0  # a heartbeat older than this: no live holder (10 missed beats)


def write_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], None] | bytes | str) -> None:
    """Write ``path`` whole or not at all: ``write`` is the content or a function that writes to a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as f:
            if callable(write):
                write(f)
            else:
                f.write(write.encode() if isinstance(write, str) else write)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # some filesystems cannot open or fsync a folder; the data is synced
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """``obj`` as indented JSON, with :func:`write_atomically`."""
    write_atomically(path, json.dumps(obj, indent=2) + "\n")


class LockFile:
    """``try_acquire()`` takes the lock (None) or returns the live holder's record; ``release()`` drops it."""

    def __init__(self, path: str | Path, stale_after_s: float = STALE_AFTER_S) -> None:
        self.path = Path(path)
        self.stale_after_s = stale_after_s
        self.me = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "ticks": _start_ticks(os.getpid()),
            "started": time.time(),
            "token": uuid.uuid4().hex,
        }
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def __enter__(self) -> LockFile:  # an acquired lock, released on leaving
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def try_acquire(self) -> dict[str, Any] | None:
        """None once this process holds the lock; else the holder's record (``host``, ``pid``, ``started``).
        Reads before it writes, so waiters that poll cost a read each."""
        holder: dict[str, Any] = {}
        for _ in range(10):  # a few rounds: another starter may take or drop the lock between our looks
            raw, holder = self._read()
            if raw is None:
                if self._create():
                    self._start_heartbeat()
                    return None
                continue
            reason = self._stale(holder)
            if reason is None:
                return holder
            log.warning("taking over the lock %s: %s", self.path, reason)
            self._break(raw)
        return holder

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
            self._beat = None
        raw, holder = self._read()
        if raw is not None and holder.get("token") == self.me["token"]:
            self._break(raw)

    def _create(self) -> bool:
        tmp = self.path.with_name(f"{self.path.name}.{self.me['token']}")
        try:
            with open(tmp, "w") as f:
                json.dump(self.me, f)
                f.flush()
                os.fsync(f.fileno())  # linked only once its record is on disk: never an empty lock
            try:
                os.link(tmp, self.path)  # atomic, fails if the lock exists; also on NFS
            except (FileExistsError, FileNotFoundError):  # taken; its new holder may have cleared our temp
                return False
            return True
        finally:
            tmp.unlink(missing_ok=True)

    def _read(self) -> tuple[bytes | None, dict[str, Any]]:
        """(the file's bytes, its record with its age), or (None, {}) when there is no lock file."""
        try:
            with open(self.path, "rb") as f:
                raw, mtime = f.read(), os.fstat(f.fileno()).st_mtime
        except FileNotFoundError:
            return None, {}
        try:
            holder = json.loads(raw)
            holder = holder if isinstance(holder, dict) else {}
        except ValueError:
            holder = {}
        return raw, {**holder, "age": time.time() - mtime}

    def _stale(self, holder: dict[str, Any]) -> str | None:
        """Why ``holder`` no longer holds the lock, or None if it may still."""
        pid = holder.get("pid")
        if not isinstance(pid, int) or pid <= 0 or not holder.get("host") or not holder.get("token"):
            return "it is empty or damaged (a crash while it was written?)"
        if holder["host"] == self.me["host"]:
            if not _alive(pid):
                return f"its process {pid} on this host is gone"
            ticks = _start_ticks(pid)
            if ticks is not None and holder.get("ticks") is not None:
                if ticks != holder["ticks"]:
                    return f"pid {pid} on this host is another process now (a restarted container?)"
                return None
            if pid == os.getpid():  # no start times to compare: this process did not lock it before
                return f"it names this process's pid {pid} (a restarted container?)"
        if holder["age"] > self.stale_after_s:
            return f"its holder on {holder['host']} has not touched it for {holder['age']:.0f} s"
        return None

    def _break(self, raw: bytes) -> None:
        """Remove the lock file if it still holds ``raw``: moved aside first, so that a lock another process
        took meanwhile is put back, never deleted."""
        aside = self.path.with_name(f"{self.path.name}.stale-{uuid.uuid4().hex[:8]}")
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:
            return
        try:
            if aside.read_bytes() != raw:
                with contextlib.suppress(FileExistsError):
                    os.link(aside, self.path)
        finally:
            aside.unlink(missing_ok=True)

    def _start_heartbeat(self) -> None:
        self._stop.clear()

        def beat() -> None:
            while not self._stop.wait(HEARTBEAT_S):
                with contextlib.suppress(OSError):  # one failed touch (an NFS hiccup) must not end the beats
                    os.utime(self.path)

        self._beat = threading.Thread(target=beat, name=f"heartbeat {self.path.name}", daemon=True)
        self._beat.start()


def describe(holder: dict[str, Any]) -> str:
    """``host node-3 pid 4242 (since 2025-01-01 10:00:00)``."""
    try:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(holder["started"])))
    except (KeyError, TypeError, ValueError):
        since = "an unknown time"
    return f"host {holder.get('host')} pid {holder.get('pid')} (since {since})"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    return True


def _start_ticks(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot; Linux), telling a reused pid from its first
    process; None where /proc does not say."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rpartition(b")")[2].split()[19])  # field 22; the name may hold ')'
    except (OSError, ValueError, IndexError):
        return None
