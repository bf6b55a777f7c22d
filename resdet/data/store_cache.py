"""Record stores cached in files, one per dataset version, shared by every process of a machine.

The first process that needs a dataset parses its annotation files and writes the store; every later one
(other training processes, their loader workers, the next run) maps the file instead of parsing. The file's
name holds a hash of the source files' paths, sizes and modification times, the parser's version and the
parse options, so a changed json gets a new file and the old one is never read. Files are written to a
temporary name and renamed once complete, and opening checks the header and size: a half-written or
damaged file is rebuilt, never read. Where: $RESDET_CACHE, else a `.resdet_cache` folder beside the first
source; where neither can be written the store stays in memory, with a warning.
"""
import contextlib
import hashlib
import json
import logging
import os
import re
from typing import Callable, Dict, Iterator, Optional, Sequence

from ..engine.allocator import release_freed_memory
from .record_store import RecordStore, StoreFileError, open_store

try:
    import fcntl
except ImportError:  # Windows: no lock; concurrent builders each write a complete file, the last rename wins
    fcntl = None

logger = logging.getLogger(__name__)

# Bump when a parser's output changes for the same input: old cache files are then ignored.
PARSER_VERSION = 1
CACHE_DIR_NAME = ".resdet_cache"
HASHED_FILE_SIZE = 16 << 20  # bytes
_warned_dirs = set()
_opened: Dict[str, RecordStore] = {}  # cache path -> the store this process uses (opened or built once)


def cache_root(sources: Sequence[str]) -> str:
    """$RESDET_CACHE, or the `.resdet_cache` folder beside the first source."""
    configured = os.environ.get("RESDET_CACHE")
    if configured:
        return configured
    return os.path.join(os.path.dirname(os.path.abspath(sources[0])), CACHE_DIR_NAME)


def source_signature(paths: Sequence[str]) -> list:
    """(absolute path, size, modification time in ns, content hash of a small file) of each source.

    Small files are hashed as well because two writes within one clock tick can leave size and time unchanged.
    """
    signature = []
    for path in paths:
        info = os.stat(path)
        digest = ""
        if os.path.isfile(path) and info.st_size <= HASHED_FILE_SIZE:
            with open(path, "rb") as file:
                digest = hashlib.sha1(file.read()).hexdigest()
        signature.append([os.path.abspath(path), info.st_size, info.st_mtime_ns, digest])
    return signature


def cache_file(sources: Sequence[str], options: object, stem: str) -> str:
    """The cache path of a dataset built from `sources` with `options` (any JSON value)."""
    key = json.dumps([PARSER_VERSION, options, source_signature(sources)], sort_keys=True, default=str)
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    safe_stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem)[:60]
    return os.path.join(cache_root(sources), f"{safe_stem}-{digest}.store")


@contextlib.contextmanager
def _exclusive(lock_file) -> Iterator[None]:
    """Hold an exclusive lock on the open `lock_file` (processes of one machine wait for each other)."""
    with lock_file:
        if fcntl is not None:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def _try_open(path: str) -> Optional[RecordStore]:
    try:
        return open_store(path)
    except StoreFileError as err:
        logger.warning("%s; building it again", err)
        return None
    except OSError:  # none yet, or a cache folder that cannot be read
        return None


def cached_store(sources: Sequence[str], options: object, stem: str,
                 build: Callable[[], RecordStore]) -> RecordStore:
    """The store of `build()`, from its cache file when a complete one exists for these sources and options."""
    path = cache_file(sources, options, stem)
    if path not in _opened:
        _opened[path] = _open_or_build(path, build)
    return _opened[path]


def _open_or_build(path: str, build: Callable[[], RecordStore]) -> RecordStore:
    store = _try_open(path)
    if store is not None:
        logger.info("dataset records mapped from %s", path)
        return store
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        lock_file = open(path + ".lock", "a")
    except OSError as err:
        _warn_unwritable(os.path.dirname(path), err)
        return build()
    with _exclusive(lock_file):
        store = _try_open(path)  # another process may have written it while this one waited
        if store is not None:
            return store
        built = build()
        release_freed_memory()  # the parsed annotation files' objects, freed but still held by malloc
        if built.has_pickled_fields():
            return built
        try:
            built.save(path)
        except OSError as err:
            _warn_unwritable(os.path.dirname(path), err)
            return built
        logger.info("dataset records written to %s", path)
        return open_store(path)


def _warn_unwritable(folder: str, err: OSError) -> None:
    if folder not in _warned_dirs:
        _warned_dirs.add(folder)
        logger.warning("cannot write the dataset cache in %s (%s): every process parses the annotations itself "
                       "and holds its own copy; set RESDET_CACHE to a writable folder", folder,
                       err.strerror or err)
