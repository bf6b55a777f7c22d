"""Dataset records as flat arrays: reading a record copies nothing that other processes share.

A list of dicts is a million Python objects whose reference counts change whenever a DataLoader worker
reads them, so fork's copy-on-write gives every worker its own copy of the pages they sit on. A RecordStore
holds the same records as a few numpy arrays (boxes (M,4), classes (M,), per-image offsets, file names in
one byte buffer) and builds the small dict of one image on request. Saved to a file (`save`) and opened
with `open_store`, the arrays are a read-only memory map: every process and worker of a machine that opens
the file shares one copy in the page cache.

Fields are typed by column: "str", "int", "float", "bool" (one value per record), "list" (a fixed-length
list of numbers, (N,K)), "array" (a numpy array of one shape, (N,...)), a nested schema (a list of dicts
per record, e.g. "annotations", with offsets (N+1,)) and "pickle" (anything else, one pickle per record;
such a store is kept in memory only). Keys missing from some records go to the pickled field `MORE`.
"""
import json
import mmap
import os
import pickle
import socket
from typing import Dict, Iterator, List, Optional, Sequence, Union

import numpy as np

Schema = Dict[str, Union[str, dict]]  # field -> kind, or field -> nested schema
MORE = "__more__"  # pickled dict of the keys that only some records have
MAGIC = b"RDSTORE1"
FORMAT_VERSION = 1
_ALIGN = 64
_SCALAR_DTYPES = {"int": np.int64, "float": np.float64, "bool": np.bool_}
_SCALAR_KINDS = {int: "int", float: "float", bool: "bool", str: "str"}
_ITERATION_CHUNK = 4096  # records decoded at a time when iterating


class StoreFileError(ValueError):
    """A store file that is not complete or not a store (it is rebuilt, never read as garbage)."""


class RecordStore(Sequence):
    """Read-only records (dicts) kept as columns; `store[i]` builds record i."""

    def __init__(self, length: int, schema: Schema, arrays: Dict[str, np.ndarray], meta: Optional[dict] = None,
                 path: Optional[str] = None, index: Optional[np.ndarray] = None):
        self.length, self.schema, self.arrays = length, schema, arrays
        self.meta = meta or {}  # plain values saved with the store (e.g. the parser's warnings)
        self.path = path  # the file the arrays are mapped from, if any
        self.index = index  # (n,) int64 positions of the selected records (select), or None for all

    @classmethod
    def from_records(cls, records: Sequence[dict], meta: Optional[dict] = None) -> "RecordStore":
        """The store of a list of dicts; `list(store) == list(records)` holds."""
        schema, arrays = _encode(list(records), "")
        return cls(len(records), schema, arrays, meta)

    @classmethod
    def from_columns(cls, columns: Dict[str, object], meta: Optional[dict] = None) -> "RecordStore":
        """A store from ready columns: a list of str, a (N,) int64 / float64 / bool array, a (N,K) numeric
        array (a list per record) or, for a nested list of dicts, (offsets (N+1,), {field: column})."""
        schema, arrays = _from_columns(columns, "")
        length = next(iter(_column_lengths(columns)), 0)
        return cls(length, schema, arrays, meta)

    def __len__(self) -> int:
        return self.length if self.index is None else len(self.index)

    def __getitem__(self, position: Union[int, slice]) -> Union[dict, "RecordStore"]:
        if isinstance(position, slice):
            return self.select(np.arange(len(self))[position])
        size = len(self)
        if not -size <= position < size:
            raise IndexError(f"record {position} of a store of {size}")
        position %= size
        row = int(self.index[position]) if self.index is not None else position
        return _decode(self.schema, self.arrays, "", row, row + 1)[0]

    def __iter__(self) -> Iterator[dict]:
        if self.index is not None:
            yield from (self[k] for k in range(len(self)))
            return
        for begin in range(0, self.length, _ITERATION_CHUNK):
            yield from _decode(self.schema, self.arrays, "", begin, min(begin + _ITERATION_CHUNK, self.length))

    def __reduce__(self):
        # A file-backed store travels to spawned processes as its path: they map the same file.
        if self.path is not None:
            return open_store, (self.path, self.index)
        return RecordStore, (self.length, self.schema, self.arrays, self.meta, None, self.index)

    def select(self, positions: np.ndarray) -> "RecordStore":
        """The records at `positions` (of this store), sharing its arrays."""
        positions = np.asarray(positions, dtype=np.int64)
        rows = positions if self.index is None else self.index[positions]
        return RecordStore(self.length, self.schema, self.arrays, self.meta, self.path, rows)

    def column(self, field: str) -> np.ndarray:
        """(n,) values of a per-record "int", "float" or "bool" field."""
        if self.schema.get(field) not in _SCALAR_DTYPES:
            raise KeyError(f"store field {field!r} is not numeric (kind {self.schema.get(field)!r})")
        values = self.arrays[field]
        return values if self.index is None else values[self.index]

    def nested(self, field: str) -> "RecordStore":
        """The entries of nested field `field` of every record (all records, in order) as a store."""
        kind = self.schema.get(field)
        if not isinstance(kind, dict):
            raise KeyError(f"store field {field!r} is not a nested list of dicts")
        prefix = f"{field}/"
        arrays = {name[len(prefix):]: value for name, value in self.arrays.items() if name.startswith(prefix)}
        offsets = self.arrays[f"{field}.offsets"]
        return RecordStore(int(offsets[-1]), kind, arrays, path=None)

    def with_column(self, name: str, values: np.ndarray) -> "RecordStore":
        """A copy (in memory) whose array `name` (e.g. "annotations/category_id") is `values`."""
        if self.arrays[name].shape != values.shape:
            raise ValueError(f"store array {name!r}: shape {values.shape}, expected {self.arrays[name].shape}")
        return RecordStore(self.length, self.schema, {**self.arrays, name: values}, self.meta, None, self.index)

    def count_nested(self, field: str, mask: np.ndarray) -> np.ndarray:
        """(n,) how many entries of nested field `field` of each record have `mask` (over all entries) set."""
        offsets = self.arrays[f"{field}.offsets"]
        running = np.zeros(len(mask) + 1, dtype=np.int64)
        np.cumsum(mask, out=running[1:])
        counts = running[offsets[1:]] - running[offsets[:-1]]
        return counts if self.index is None else counts[self.index]

    def nbytes(self) -> int:
        """Bytes held by the arrays."""
        return sum(value.nbytes for value in self.arrays.values())

    def has_pickled_fields(self) -> bool:
        """Whether a field is pickled per record (then the store is not written to files)."""
        return _has_pickle(self.schema)

    def save(self, path: str) -> None:
        """Write the store to `path` atomically (a temporary file renamed over it once complete)."""
        if self.index is not None or self.has_pickled_fields():
            raise ValueError("only a whole store of typed fields (no pickled field) is saved to a file")
        layout, offset = {}, 0
        for name, value in self.arrays.items():
            offset = _aligned(offset)
            layout[name] = [value.dtype.str, list(value.shape), offset]
            offset += value.nbytes
        header = json.dumps({"format": FORMAT_VERSION, "length": self.length, "schema": self.schema,
                             "arrays": layout, "meta": self.meta, "data_bytes": offset}).encode()
        data_start = _aligned(len(MAGIC) + 8 + len(header))
        temporary = f"{path}.tmp.{socket.gethostname()}.{os.getpid()}"  # machines may share the folder
        try:
            with open(temporary, "wb") as file:
                file.write(MAGIC + len(header).to_bytes(8, "little") + header)
                for name, value in self.arrays.items():
                    file.seek(data_start + layout[name][2])
                    file.write(np.ascontiguousarray(value).tobytes())
                file.truncate(data_start + offset)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)


class ConcatRecords(Sequence):
    """Several record sequences (e.g. stores of VOC 2007 and 2012) read as one."""

    def __init__(self, parts: Sequence[Sequence[dict]]):
        self.parts = list(parts)
        self.ends = np.cumsum([len(part) for part in self.parts])  # (P,) end position of each part

    def __len__(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0

    def __getitem__(self, position: int) -> dict:
        if not -len(self) <= position < len(self):
            raise IndexError(f"record {position} of {len(self)}")
        position %= len(self)
        part = int(np.searchsorted(self.ends, position, side="right"))
        return self.parts[part][position - (int(self.ends[part - 1]) if part else 0)]


def open_store(path: str, index: Optional[np.ndarray] = None) -> RecordStore:
    """Map the store file at `path` read-only; StoreFileError if it is incomplete or not a store."""
    with open(path, "rb") as file:
        head = file.read(len(MAGIC) + 8)
        if len(head) < len(MAGIC) + 8 or head[:len(MAGIC)] != MAGIC:
            raise StoreFileError(f"{path}: not a resdet record store")
        header_size = int.from_bytes(head[len(MAGIC):], "little")
        try:
            header = json.loads(file.read(header_size))
        except (ValueError, UnicodeDecodeError):
            raise StoreFileError(f"{path}: the record store's header is damaged") from None
        data_start = _aligned(len(MAGIC) + 8 + header_size)
        if header.get("format") != FORMAT_VERSION:
            raise StoreFileError(f"{path}: record store format {header.get('format')}, expected {FORMAT_VERSION}")
        if os.fstat(file.fileno()).st_size != data_start + header["data_bytes"]:
            raise StoreFileError(f"{path}: the record store is incomplete")
        mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) if header["data_bytes"] else b""
    arrays = {}
    for name, (dtype, shape, offset) in header["arrays"].items():
        count = int(np.prod(shape, dtype=np.int64))
        arrays[name] = np.frombuffer(mapped, dtype=np.dtype(dtype), count=count,
                                     offset=data_start + offset if count else 0).reshape(shape)
    return RecordStore(header["length"], header["schema"], arrays, header["meta"], path, index)


def _aligned(offset: int) -> int:
    return -(-offset // _ALIGN) * _ALIGN


def _has_pickle(schema: Schema) -> bool:
    return any(_has_pickle(kind) if isinstance(kind, dict) else kind == "pickle" for kind in schema.values())


def _byte_strings(encoded: List[bytes]) -> Dict[str, np.ndarray]:
    """One buffer of all the byte strings and the (N+1,) offsets where each starts and the last ends."""
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    return {"offsets": offsets, "bytes": np.frombuffer(b"".join(encoded), dtype=np.uint8)}


def _strings(values: List[str]) -> Dict[str, np.ndarray]:
    return _byte_strings([value.encode("utf-8", "surrogatepass") for value in values])


def _pickles(values: List[object]) -> Dict[str, np.ndarray]:
    return _byte_strings([pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL) for value in values])


def _numeric_rows(values: List[list]) -> Optional[np.ndarray]:
    """(N,K) int64 or float64 of equal-length lists of one number type, else None."""
    if len(set(map(len, values))) != 1:
        return None
    types = set(type(v) for row in values for v in row)
    if types not in ({int}, {float}):
        return None
    try:
        return np.array(values, dtype=np.int64 if types == {int} else np.float64)
    except OverflowError:
        return None


def _encode_field(values: List[object], name: str, arrays: Dict[str, np.ndarray]) -> Union[str, dict]:
    """Add the arrays of one field (named `name` in `arrays`) and return its kind."""
    types = set(map(type, values))
    kind = _SCALAR_KINDS.get(next(iter(types))) if len(types) == 1 else None
    if kind == "str":
        arrays.update({f"{name}.{part}": array for part, array in _strings(values).items()})
        return "str"
    if kind is not None:
        try:
            arrays[name] = np.array(values, dtype=_SCALAR_DTYPES[kind])
            return kind
        except OverflowError:  # an int beyond int64
            pass
    if types == {list}:
        children = [child for value in values for child in value]
        if not children or set(map(type, children)) == {dict}:
            offsets = np.zeros(len(values) + 1, dtype=np.int64)
            np.cumsum([len(value) for value in values], out=offsets[1:])
            arrays[f"{name}.offsets"] = offsets
            schema, child_arrays = _encode(children, f"{name}/")
            arrays.update(child_arrays)
            return schema
        rows = _numeric_rows(values)
        if rows is not None:
            arrays[name] = rows
            return "list"
    if types == {np.ndarray} and len({(v.shape, v.dtype.str) for v in values}) == 1 and values[0].dtype != object:
        arrays[name] = np.stack(values)
        return "array"
    arrays.update({f"{name}.{part}": array for part, array in _pickles(values).items()})
    return "pickle"


def _encode(records: List[dict], prefix: str):
    """(schema, arrays named with `prefix`) of a list of dicts."""
    common = list(records[0]) if records else []
    key_sets = {frozenset(record) for record in records}
    if len(key_sets) > 1:
        shared = frozenset.intersection(*key_sets)
        common = [key for key in common if key in shared]
    schema, arrays = {}, {}
    for key in common:
        if not isinstance(key, str) or "/" in key or "." in key or key == MORE:
            raise ValueError(f"record key {key!r}: a store needs string keys without '/' or '.'")
        schema[key] = _encode_field([record[key] for record in records], prefix + key, arrays)
    if len(key_sets) > 1:
        rest = [{k: v for k, v in record.items() if k not in schema} for record in records]
        schema[MORE] = "pickle"
        arrays.update({f"{prefix}{MORE}.{part}": array for part, array in _pickles(rest).items()})
    return schema, arrays


def _column_lengths(columns: Dict[str, object]) -> Iterator[int]:
    for value in columns.values():
        yield len(value[0]) - 1 if isinstance(value, tuple) else len(value)


def _from_columns(columns: Dict[str, object], prefix: str):
    """(schema, arrays) of from_columns' columns."""
    if len(set(_column_lengths(columns))) > 1:
        raise ValueError(f"columns of different lengths: {dict(zip(columns, _column_lengths(columns)))}")
    schema, arrays = {}, {}
    for key, value in columns.items():
        name = prefix + key
        if isinstance(value, tuple):
            offsets, children = value
            arrays[f"{name}.offsets"] = np.asarray(offsets, dtype=np.int64)
            schema[key], child_arrays = _from_columns(children, f"{name}/")
            arrays.update(child_arrays)
        elif isinstance(value, list):
            schema[key] = "str"
            arrays.update({f"{name}.{part}": array for part, array in _strings(value).items()})
        else:
            kinds = {"i": "int", "f": "float", "b": "bool"}
            schema[key] = kinds[value.dtype.kind] if value.ndim == 1 else "list"
            arrays[name] = value.astype(_SCALAR_DTYPES[kinds[value.dtype.kind]], copy=False)
    return schema, arrays


def _decode_field(kind: Union[str, dict], arrays: Dict[str, np.ndarray], name: str, begin: int, end: int) -> list:
    """The values of rows begin..end-1 of one field."""
    if isinstance(kind, dict):
        offsets = arrays[f"{name}.offsets"][begin:end + 1].tolist()
        entries = _decode(kind, arrays, f"{name}/", offsets[0], offsets[-1])
        base = offsets[0]
        return [entries[a - base:b - base] for a, b in zip(offsets[:-1], offsets[1:])]
    if kind in ("int", "float", "bool", "list"):
        return arrays[name][begin:end].tolist()
    if kind == "array":
        return list(np.array(arrays[name][begin:end]))  # copies: records own writable arrays
    offsets = arrays[f"{name}.offsets"][begin:end + 1].tolist()
    data = arrays[f"{name}.bytes"][offsets[0]:offsets[-1]].tobytes()
    base = offsets[0]
    pieces = [data[a - base:b - base] for a, b in zip(offsets[:-1], offsets[1:])]
    if kind == "str":
        return [piece.decode("utf-8", "surrogatepass") for piece in pieces]
    return [pickle.loads(piece) for piece in pieces]


def _decode(schema: Schema, arrays: Dict[str, np.ndarray], prefix: str, begin: int, end: int) -> List[dict]:
    """Records begin..end-1 of the (possibly nested) schema whose arrays are named with `prefix`."""
    fields = [key for key in schema if key != MORE]
    columns = [_decode_field(schema[key], arrays, prefix + key, begin, end) for key in fields]
    records = [dict(zip(fields, row)) for row in zip(*columns)] if fields else [{} for _ in range(end - begin)]
    if MORE in schema:
        for record, more in zip(records, _decode_field("pickle", arrays, prefix + MORE, begin, end)):
            record.update(more)
    return records
