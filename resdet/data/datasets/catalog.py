"""DatasetCatalog (name -> loader of dataset dicts) and MetadataCatalog (name -> Metadata)."""
import os
from typing import Any, Callable, Dict, List, Optional, Union

from ..errors import DataError, DatasetNotRegisteredError
from ..record_store import RecordStore

PathSpec = Union[str, Callable[[], str]]  # a path, or a function giving it when the dataset is requested


class DatasetNotFoundError(DataError, FileNotFoundError):
    """A registered dataset's files are not where the catalog looks for them."""

    def __init__(self, name: str, path: str):
        super().__init__(
            f"dataset {name!r}: {path} does not exist (RESDET_DATASETS={datasets_root()}); "
            "see README section 'Datasets'"
        )
        self.dataset_name = name
        self.path = path


def datasets_root() -> str:
    """The root of the built-in datasets: $RESDET_DATASETS, default ./datasets (read on every call)."""
    return os.environ.get("RESDET_DATASETS", "./datasets")


def under_root(*parts: str) -> Callable[[], str]:
    """A path below datasets_root(), resolved when it is used rather than at import."""
    return lambda: os.path.join(datasets_root(), *parts)


def resolve_path(path: PathSpec) -> str:
    """The string path of a PathSpec."""
    return path() if callable(path) else path


def require_path(name: str, path: PathSpec) -> str:
    """Resolve `path` and raise DatasetNotFoundError naming it when it does not exist."""
    resolved = resolve_path(path)
    if not os.path.exists(resolved):
        raise DatasetNotFoundError(name, resolved)
    return resolved


class Metadata:
    """Attributes of one dataset; path-like attributes may be resolved on each access, others loaded once."""

    def __init__(self, name: str):
        self.name = name
        self._dynamic: Dict[str, Callable[[], Any]] = {}
        self._lazy: Optional[Callable[[], Dict[str, Any]]] = None
        self._lazy_source: Optional[PathSpec] = None
        self._lazy_values: Optional[Dict[str, Any]] = None  # what _lazy returned, for the path it read
        self._lazy_read_from: Optional[str] = None

    def set(self, **kwargs) -> "Metadata":
        """Set attributes; callables given as PathSpecs stay dynamic (re-evaluated on each read)."""
        for key, value in kwargs.items():
            if callable(value):
                self._dynamic[key] = value
            else:
                self._dynamic.pop(key, None)
                setattr(self, key, value)
        return self

    def set_lazy(self, loader: Callable[[], Dict[str, Any]], source: Optional[PathSpec] = None) -> "Metadata":
        """`loader()` fills the attributes it returns (those not already set) on the first missing read, and again
        when `source` (the file or folder it reads, e.g. below $RESDET_DATASETS) resolves to another path."""
        self._lazy, self._lazy_source, self._lazy_values = loader, source, None
        return self

    def __getattr__(self, key: str) -> Any:
        # Only reached when normal lookup fails; private names never trigger loading (pickle, copy).
        if key.startswith("_"):
            raise AttributeError(key)
        if key in self._dynamic:
            return self._dynamic[key]()
        if self._lazy is not None:
            source = resolve_path(self._lazy_source) if self._lazy_source is not None else None
            if self._lazy_values is None or source != self._lazy_read_from:
                self._lazy_values = self._lazy()  # may raise DatasetNotFoundError; then it is tried again next time
                self._lazy_read_from = source
            if key in self._lazy_values:
                return self._lazy_values[key]
        raise AttributeError(f"metadata of dataset {self.name!r} has no attribute {key!r}")

    def get(self, key: str, default: Any = None) -> Any:
        """The attribute `key`, or `default` when it is absent."""
        try:
            return getattr(self, key)
        except AttributeError:
            return default

    def as_dict(self) -> Dict[str, Any]:
        """All attributes currently known (lazy ones included), with dynamic paths resolved."""
        self.get("thing_classes")  # triggers the lazy loader, if any
        public = {**(self._lazy_values or {}), **{k: v for k, v in self.__dict__.items() if not k.startswith("_")}}
        public.update({k: fn() for k, fn in self._dynamic.items()})
        return public


# Handlers for config-only names "<prefix>:<arg>:<arg>": prefix -> function(name, rest) that registers `name`.
_SPEC_HANDLERS: Dict[str, Callable[[str, str], None]] = {}


def register_spec_prefix(prefix: str, handler: Callable[[str, str], None]) -> None:
    """Let names of the form '<prefix>:...' register themselves the first time they are requested."""
    _SPEC_HANDLERS[prefix] = handler


def _ensure_registered(name: str) -> None:
    if name in DatasetCatalog._loaders:
        return
    prefix, sep, rest = name.partition(":")
    if sep and prefix in _SPEC_HANDLERS:
        _SPEC_HANDLERS[prefix](name, rest)
        return
    known = ", ".join(sorted(DatasetCatalog._loaders))
    forms = ", ".join(f"'{p}:...'" for p in sorted(_SPEC_HANDLERS))
    raise DatasetNotRegisteredError(
        f"dataset {name!r} is not registered; registered: {known}; or use the forms {forms}"
    )


class DatasetCatalog:
    """Names -> functions returning the dataset's records, a list of dicts or a RecordStore (called on every `get`)."""

    _loaders: Dict[str, Callable[[], Union[List[dict], RecordStore]]] = {}

    @classmethod
    def register(cls, name: str, loader: Callable[[], Union[List[dict], RecordStore]]) -> None:
        """Register `loader` under `name`; a name may be registered once."""
        if name in cls._loaders:
            raise KeyError(f"dataset {name!r} is already registered")
        cls._loaders[name] = loader

    @classmethod
    def get(cls, name: str) -> List[dict]:
        """Load and return the dataset dicts of `name` (also accepts 'coco:json:images', 'voc:dir:split')."""
        return list(cls.get_records(name))

    @classmethod
    def get_records(cls, name: str) -> RecordStore:
        """The records of `name` as a RecordStore: shared, not copied, by loader workers and processes.

        Loaders may return a RecordStore (the built-in parsers do, from a cache file that every process of
        the machine maps) or a list of dicts, which is stored in this process's memory.
        """
        _ensure_registered(name)
        records = cls._loaders[name]()
        return records if isinstance(records, RecordStore) else RecordStore.from_records(records)

    @classmethod
    def list(cls) -> List[str]:
        """Registered names."""
        return sorted(cls._loaders)

    @classmethod
    def remove(cls, name: str) -> None:
        """Forget `name` (and its metadata)."""
        cls._loaders.pop(name, None)
        MetadataCatalog._metadata.pop(name, None)


class MetadataCatalog:
    """Names -> Metadata (thing_classes, evaluator_type, paths)."""

    _metadata: Dict[str, Metadata] = {}

    @classmethod
    def get(cls, name: str) -> Metadata:
        """The Metadata of a registered dataset (created empty for one registered without metadata)."""
        _ensure_registered(name)
        if name not in cls._metadata:
            cls._metadata[name] = Metadata(name)
        return cls._metadata[name]

    @classmethod
    def list(cls) -> List[str]:
        """Names that have metadata."""
        return sorted(cls._metadata)
