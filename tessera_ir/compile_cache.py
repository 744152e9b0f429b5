"""The on-disk compile cache, safe to share between processes.

The cache folder (``knobs.cache_dir()``) holds:

- ``<key>/``: a published entry: the artifact, every stage's IR and ``cache.json`` (what was
  compiled, for ``tessera cache list``). An entry never changes once published, so reading one
  needs no lock; its folder's mtime is its last use.
- ``<key>.lock``: the key's lock, held while the key is built. Processes that compile the same
  model at once build it once: the first builds, the others wait on the lock and then reuse the
  entry it published.
- ``.tmp-<key>-<nonce>/``: an entry being built (under the key's lock), renamed to ``<key>/``
  once complete, so a reader sees a complete entry or none.
- ``.private-<nonce>/`` and its lock ``.private-<nonce>.lock``: a build that is not shared
  (``compile(cache=False)``, or a fresh build where an entry exists already), kept as long as
  the compiled model lives; its process holds the lock as long.
- ``.trash-<key>-<nonce>/``: an entry being deleted (moved aside first, so that no reader ever
  sees half of it).

A process killed while building leaves a temporary folder whose lock nobody holds (the kernel
releases a dead process's locks). Every later use of the cache sweeps such folders once they
are older than ``STALE_SECONDS``; the lock, not the age, is what proves a folder abandoned, and
the age only keeps the sweep away from folders on a file system where locks are unreliable.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from filelock import FileLock, Timeout

from . import log
from .errors import TesseraError

# A temporary folder left by a killed build is swept once it is this old (and unlocked).
STALE_SECONDS = 3600.0
# What an entry says about itself, for `tessera cache list`.
INFO_FILE = "cache.json"
KEY_LENGTH = 32

_KEY = re.compile(rf"[0-9a-f]{{{KEY_LENGTH}}}")
_STAGING = re.compile(rf"\.tmp-(?P<key>[0-9a-f]{{{KEY_LENGTH}}})-[0-9a-f]+")
_PRIVATE = re.compile(r"\.private-[0-9a-f]+")
_PRIVATE_LOCK = re.compile(r"(?P<folder>\.private-[0-9a-f]+)\.lock")
_TRASH = re.compile(r"\.trash-.+")

_T = TypeVar("_T")
_log = log.get("cache")


def cache_key(parts: dict[str, Any]) -> str:
    """A stable key over everything that decides the compiled code."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_LENGTH]


@dataclass(frozen=True)
class EntryInfo:
    """A published entry as ``tessera cache list`` shows it."""

    key: str
    path: Path
    size: int  # bytes of every file in it
    built: float  # seconds since the epoch
    used: float  # last use, seconds since the epoch
    model: str
    target: str


def _lock(path: Path) -> FileLock:
    # Not thread-local: a private build's lock is released by a finalizer, which may run on
    # another thread than the one that took it.
    return FileLock(path, thread_local=False)


def _try_lock(path: Path) -> FileLock | None:
    """The lock at ``path``, taken now, or None when someone holds it."""
    lock = _lock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return None
    return lock


class _Private:
    """A build folder of this process's own, and the lock that marks it in use."""

    def __init__(self, root: Path) -> None:
        name = f".private-{uuid.uuid4().hex}"
        self.path = root / name
        self.lock_path = root / f"{name}.lock"
        self._lock: FileLock | None = _lock(self.lock_path)
        # The name is new, so nobody else can hold it; it is taken before the folder exists so
        # that a sweep never finds the folder unlocked.
        self._lock.acquire()
        try:
            self.path.mkdir()
        except BaseException:
            self.unlock()
            raise

    def unlock(self) -> None:
        """Drops the lock and its file (nobody else ever waits on a private lock)."""
        if self._lock is not None:
            self.lock_path.unlink(missing_ok=True)
            self._lock.release()
            self._lock = None

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        self.unlock()


class CompileCache:
    def __init__(self, root: Path) -> None:
        self.root = root

    def entry(self, key: str) -> Path:
        return self.root / key

    def lock_path(self, key: str) -> Path:
        return self.root / f"{key}.lock"

    def lookup(self, key: str) -> Path | None:
        path = self.entry(key)
        return path if path.is_dir() else None

    def discard(self, key: str) -> None:
        """Removes an entry (moved aside first, so a concurrent reader never sees half of it)."""
        path = self.entry(key)
        if not path.exists():
            return
        trash = self.root / f".trash-{key}-{uuid.uuid4().hex}"
        try:
            path.rename(trash)
        except OSError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    def obtain(
        self,
        key: str,
        build: Callable[[Path], None],
        load: Callable[[Path, bool], _T | None],
        *,
        reuse: bool = True,
        publish: bool = True,
        describe: Mapping[str, Any] | None = None,
    ) -> _T:
        """The loaded entry for ``key``: reused when ``reuse`` allows and a good entry exists,
        else built by ``build(folder)``.

        ``load(folder, cache_hit)`` returns None for an incomplete or corrupt entry (which is
        then rebuilt). With ``reuse`` and ``publish``, the build becomes the shared entry, built
        once however many processes ask for it at once. Otherwise the build goes to a private
        folder, which is removed once the returned object is garbage-collected (or the process
        exits); with ``publish`` it becomes the shared entry only where there is none yet, since
        other processes may be using an existing one. ``describe`` (model, target) is stored
        with the entry for ``tessera cache list``."""
        self._ensure_root()
        self.sweep()
        if reuse:
            found = self._load_entry(key, load)
            if found is not None:
                _log.info("cache hit %s (%s)", key, self.entry(key))
                return found
        if reuse and publish:
            return self._build_shared(key, build, load, describe or {})
        return self._build_private(key, build, load, describe or {}, publish=publish)

    def sweep(self, max_age: float = STALE_SECONDS) -> list[Path]:
        """Removes what killed processes left: temporary folders older than ``max_age`` seconds
        whose lock nobody holds, and entries half-way through deletion. Returns what went."""
        try:
            children = list(self.root.iterdir())
        except OSError:
            return []
        now = time.time()
        removed: list[Path] = []
        for path in children:
            name = path.name
            if _TRASH.fullmatch(name):
                # Nobody reads a trashed entry; a concurrent delete of the same folder is
                # harmless (both ignore what the other already removed).
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
                continue
            if staging := _STAGING.fullmatch(name):
                lock_path, extra = self.lock_path(staging["key"]), None
            elif _PRIVATE.fullmatch(name):
                lock_path = self.root / f"{name}.lock"
                extra = lock_path
            elif (orphan := _PRIVATE_LOCK.fullmatch(name)) and not (
                self.root / orphan["folder"]
            ).exists():
                # Left by a process killed between removing its private folder and its lock.
                lock_path, extra = path, path
            else:
                continue
            if not _older_than(path, now, max_age):
                continue
            lock = _try_lock(lock_path)
            if lock is None:
                continue  # its owner is alive
            try:
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                if extra is not None:
                    extra.unlink(missing_ok=True)
            finally:
                lock.release()
            _log.debug("swept %s, left by a killed build", path)
            removed.append(path)
        return removed

    def entries(self) -> list[EntryInfo]:
        """Every published entry, the most recently used first."""
        try:
            children = list(self.root.iterdir())
        except OSError:
            return []
        found = [
            info
            for path in children
            if _KEY.fullmatch(path.name) and (info := _entry_info(path)) is not None
        ]
        return sorted(found, key=lambda info: (-info.used, info.key))

    def builds_in_progress(self) -> int:
        """Temporary folders whose builds are running, or were killed and not yet swept."""
        try:
            return sum(
                1
                for path in self.root.iterdir()
                if _STAGING.fullmatch(path.name) or _PRIVATE.fullmatch(path.name)
            )
        except OSError:
            return 0

    def find(self, prefix: str) -> str:
        """The key of the one entry whose key starts with ``prefix``."""
        if not re.fullmatch(r"[0-9a-f]{1,32}", prefix):
            raise TesseraError(
                f"'{prefix}' is not a cache key (keys are {KEY_LENGTH} hex digits; "
                "`tessera cache list` shows them)"
            )
        matches = sorted(info.key for info in self.entries() if info.key.startswith(prefix))
        if not matches:
            raise TesseraError(f"no cache entry '{prefix}' in {self.root}")
        if len(matches) > 1:
            shown = ", ".join(matches[:3]) + (", ..." if len(matches) > 3 else "")
            raise TesseraError(
                f"'{prefix}' starts {len(matches)} cache keys ({shown}); give more of the key"
            )
        return matches[0]

    def clear(self, *, older_than: float | None = None, key: str | None = None) -> list[EntryInfo]:
        """Deletes every entry, or those unused for ``older_than`` seconds, or the one entry
        ``key``; sweeps every abandoned temporary folder whatever its age. Returns the entries
        deleted. A process that has an entry loaded keeps running (its files stay readable
        until it closes them)."""
        now = time.time()
        chosen = [
            info
            for info in self.entries()
            if (key is None or info.key == key)
            and (older_than is None or now - info.used >= older_than)
        ]
        for info in chosen:
            self.discard(info.key)
            self._drop_lock_file(info.key)
        self.sweep(max_age=0)
        return chosen

    def _ensure_root(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise TesseraError(
                f"cannot create the compile cache folder {self.root}: {error.strerror} "
                "(TESSERA_CACHE_DIR chooses another)"
            ) from None

    def _load_entry(self, key: str, load: Callable[[Path, bool], _T | None]) -> _T | None:
        entry = self.lookup(key)
        if entry is None:
            return None
        found = load(entry, True)
        if found is not None:
            try:
                # The folder's mtime is its last use: `tessera cache clear --older-than`.
                os.utime(entry)
            except OSError:
                pass  # a cache shared read-only still serves its entries
        return found

    @contextmanager
    def _holding(self, key: str) -> Iterator[None]:
        """Holds the key's lock, waiting (and saying so) while another process builds it."""
        lock = _try_lock(self.lock_path(key))
        if lock is None:
            _log.info("waiting for another process building %s", key)
            started = time.perf_counter()
            lock = _lock(self.lock_path(key))
            lock.acquire()
            _log.info("waited %.2f s for %s", time.perf_counter() - started, key)
        try:
            yield
        finally:
            lock.release()

    def _build_shared(
        self,
        key: str,
        build: Callable[[Path], None],
        load: Callable[[Path, bool], _T | None],
        describe: Mapping[str, Any],
    ) -> _T:
        with self._holding(key):
            # Looked up again under the lock: whoever held it may have just published it.
            found = self._load_entry(key, load)
            if found is not None:
                _log.info("cache hit %s: built meanwhile by another process", key)
                return found
            if self.lookup(key) is not None:
                _log.info("cache entry %s is incomplete or corrupt: rebuilding it", key)
                self.discard(key)
            _log.info("cache miss %s: building", key)
            staging = self.root / f".tmp-{key}-{uuid.uuid4().hex}"
            staging.mkdir()
            try:
                build(staging)
                _write_info(staging, key, describe)
                try:
                    os.rename(staging, self.entry(key))
                except OSError:
                    # Published by a process that took no lock (a build from before locks
                    # existed): its entry is as good as this one.
                    if not self.entry(key).is_dir():
                        raise
                    shutil.rmtree(staging, ignore_errors=True)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        return _fresh(load, self.entry(key))

    def _build_private(
        self,
        key: str,
        build: Callable[[Path], None],
        load: Callable[[Path, bool], _T | None],
        describe: Mapping[str, Any],
        *,
        publish: bool,
    ) -> _T:
        _log.info("building %s without reusing the cache", key)
        private = _Private(self.root)
        try:
            build(private.path)
            _write_info(private.path, key, describe)
        except BaseException:
            private.remove()
            raise
        if publish and self._adopt(key, private):
            _log.info("stored %s as the cache entry (there was none)", key)
            return _fresh(load, self.entry(key))
        try:
            value = _fresh(load, private.path)
        except BaseException:
            private.remove()
            raise
        _log.info("kept %s in %s while the compiled model lives", key, private.path)
        weakref.finalize(value, private.remove)
        return value

    def _adopt(self, key: str, private: _Private) -> bool:
        """Publishes a private build as the entry for ``key`` when there is none and nobody is
        building one; True when it did."""
        lock = _try_lock(self.lock_path(key))
        if lock is None:
            return False  # another process is building the key; its entry will serve
        try:
            if self.entry(key).exists():
                return False
            os.rename(private.path, self.entry(key))
        except OSError:
            return False
        finally:
            lock.release()
        private.unlock()
        return True

    def _drop_lock_file(self, key: str) -> None:
        """Deletes the key's lock file unless someone holds it. A process already waiting on
        the deleted file could then build the key beside one that locks a new file: the
        second publish finds the entry there and is dropped, so the worst case is one build
        too many."""
        lock = _try_lock(self.lock_path(key))
        if lock is None:
            return
        try:
            self.lock_path(key).unlink(missing_ok=True)
        finally:
            lock.release()


def _fresh(load: Callable[[Path, bool], _T | None], folder: Path) -> _T:
    value = load(folder, False)
    if value is None:
        raise TesseraError(f"the freshly built artifact at {folder} does not load")
    return value


def _older_than(path: Path, now: float, seconds: float) -> bool:
    try:
        return now - path.lstat().st_mtime >= seconds
    except OSError:
        return False  # already gone


def _write_info(folder: Path, key: str, describe: Mapping[str, Any]) -> None:
    info = {"key": key, "built": time.time(), **describe}
    (folder / INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")


def _entry_info(path: Path) -> EntryInfo | None:
    """What ``path`` holds, from its ``cache.json``, else (an entry built before entries
    described themselves) from its manifest; what neither says shows as ``?``. None when it is
    no entry (not a folder, or deleted meanwhile)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    if not path.is_dir():
        return None
    info: dict[str, Any] = {}
    try:
        info = json.loads((path / INFO_FILE).read_text())
    except (OSError, ValueError):
        try:
            manifest = json.loads((path / "manifest.json").read_text())
            info = {
                "model": manifest.get("metadata", {}).get("model_kind", "?"),
                "target": manifest.get("target", {}).get("kind", "?"),
            }
        except (OSError, ValueError, AttributeError):
            pass
    size = 0
    for folder, _, files in os.walk(path):
        for file in files:
            try:
                size += os.lstat(os.path.join(folder, file)).st_size
            except OSError:
                continue
    built = info.get("built")
    return EntryInfo(
        key=path.name,
        path=path,
        size=size,
        built=float(built) if isinstance(built, int | float) else stat.st_mtime,
        used=stat.st_mtime,
        model=str(info.get("model", "?")),
        target=str(info.get("target", "?")),
    )
