"""Per-image artifacts as zarr v3 stores, written atomically and read with validation.

Layout of a store (a directory):
- one array per quantity, N images along axis 0, one image per chunk, chunks grouped into
  shards of `shard_size` images so the store is a handful of files (DVC hashes per file);
- arrays of per-image variable size are padded to a maximum shape, with the true shape of
  each image in `<name>.shape` (N, ndim);
- group attributes: `ids` (image ids in order), caller attributes, and a `vit_wsss` block
  (format version, artifact kind, completion flag, and the shard files each array holds).

zarr reads an absent shard as fill values without complaint, so the writer records which
shard files exist (an all-fill shard is legitimately never written) and a reader checks
that each recorded file is still there. A shard whose bytes changed fails zarr's crc32c
check when read; both end in one message that names the store and the fix.

A store is built in a temporary sibling directory and renamed into place only after every
array and the completion flag are written, so a crash never leaves a store a reader accepts.
Same inputs give byte-identical files: no timestamps, deterministic codecs.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from pipeline.errors import InputError
from pipeline.files import commit, discard, temporary_sibling

FORMAT_VERSION = 2  # 2: the marker lists each array's shard files
MARKER = "vit_wsss"
SHAPE_SUFFIX = ".shape"
# zstd, then a crc32c of each chunk: zarr's default checksums only the shard index, so a flipped
# byte in chunk data would otherwise decode silently to wrong values.
_COMPRESSORS = (ZstdCodec(), Crc32cCodec())
# The stage that writes each kind of store, for the fix a damaged store's message gives.
_WRITER_STAGE = {"refined": "random_walk"}


class ArtifactError(InputError):
    """A store is missing, incomplete, foreign, or does not match what the reader expects."""


class _ArrayBuffer:
    """Collects items of one array and writes them a whole shard at a time.

    Writing chunk by chunk into a sharded array rewrites the shard every time; buffering a
    shard keeps writing linear in the number of images.
    """

    def __init__(self, array: zarr.Array, shard_size: int, max_shape: tuple[int, ...] | None):
        self.array = array
        self.shard_size = shard_size
        self.max_shape = max_shape
        self.pending: dict[int, dict[int, np.ndarray]] = {}
        self.shapes = np.zeros((array.shape[0], len(array.shape) - 1), dtype=np.int32) if max_shape else None
        self.written = np.zeros(array.shape[0], dtype=bool)

    def put(self, index: int, value: np.ndarray) -> None:
        value = np.asarray(value)
        item_shape = tuple(self.array.shape[1:])
        if self.max_shape is not None:
            if value.ndim != len(item_shape) or any(v > m for v, m in zip(value.shape, item_shape)):
                raise ArtifactError(f"array '{self.array.basename}': item of shape {value.shape} exceeds the declared maximum {item_shape}")
            self.shapes[index] = value.shape
            padded = np.zeros(item_shape, dtype=self.array.dtype)
            padded[tuple(slice(0, s) for s in value.shape)] = value
            value = padded
        elif value.shape != item_shape:
            raise ArtifactError(f"array '{self.array.basename}': item of shape {value.shape}, expected {item_shape}")
        shard = index // self.shard_size
        self.pending.setdefault(shard, {})[index] = value.astype(self.array.dtype, copy=False)
        self.written[index] = True
        start, stop = self._bounds(shard)
        if len(self.pending[shard]) == stop - start:
            self._flush(shard)

    def _bounds(self, shard: int) -> tuple[int, int]:
        start = shard * self.shard_size
        return start, min(start + self.shard_size, self.array.shape[0])

    def _flush(self, shard: int) -> None:
        items = self.pending.pop(shard)
        start, stop = self._bounds(shard)
        block = np.zeros((stop - start, *self.array.shape[1:]), dtype=self.array.dtype)
        for index, value in items.items():
            block[index - start] = value
        self.array[start:stop] = block

    def close(self, selection: np.ndarray) -> None:
        missing = np.nonzero(selection & ~self.written)[0]
        if missing.size:
            raise ArtifactError(f"array '{self.array.basename}': {missing.size} images were never written (first index {missing[0]})")
        for shard in sorted(self.pending):
            self._flush(shard)


class ArtifactWriter:
    """Context manager that builds a store in a temporary directory and renames it on success.

    >>> with ArtifactWriter("data/cams.zarr", kind="cams", ids=ids, attrs={...}) as out:
    ...     out.create("cams", item_shape=(20, 28, 28), dtype="float16")
    ...     out.write("cams", 0, cams0)
    """

    def __init__(self, path: str | os.PathLike, kind: str, ids: Sequence[str], attrs: dict[str, Any] | None = None, shard_size: int = 256):
        if shard_size < 1:
            raise ValueError("shard_size must be >= 1")
        self.path = Path(path)
        self.kind = kind
        self.ids = [str(i) for i in ids]
        self.attrs = dict(attrs or {})
        self.shard_size = shard_size
        self.tmp_path = temporary_sibling(self.path)
        self.group: zarr.Group | None = None
        self.buffers: dict[str, _ArrayBuffer] = {}

    def __enter__(self) -> "ArtifactWriter":
        self.group = zarr.open_group(str(self.tmp_path), mode="w", zarr_format=3)
        return self

    def create(self, name: str, item_shape: Sequence[int], dtype: str | np.dtype, max_shape: bool = False) -> None:
        """Declare an array of N items of `item_shape`; with `max_shape=True` items may be smaller (padded)."""
        assert self.group is not None, "use ArtifactWriter as a context manager"
        if name in self.buffers:
            raise ArtifactError(f"array '{name}' declared twice")
        item_shape = tuple(int(s) for s in item_shape)
        n = len(self.ids)
        array = self.group.create_array(
            name,
            shape=(n, *item_shape),
            chunks=(1, *item_shape),
            shards=(self.shard_size, *item_shape),
            dtype=dtype,
            fill_value=0,
            compressors=_COMPRESSORS,
        )
        self.buffers[name] = _ArrayBuffer(array, self.shard_size, item_shape if max_shape else None)

    def write(self, name: str, index: int, value: np.ndarray) -> None:
        """Store item `index` of array `name`."""
        if name not in self.buffers:
            raise ArtifactError(f"array '{name}' was not declared with create()")
        if not 0 <= index < len(self.ids):
            raise ArtifactError(f"index {index} out of range for {len(self.ids)} images")
        self.buffers[name].put(index, value)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            discard(self.tmp_path)
            return
        try:
            everything = np.ones(len(self.ids), dtype=bool)
            for name, buffer in self.buffers.items():
                buffer.close(everything)
                if buffer.shapes is not None:
                    shapes = self.group.create_array(name + SHAPE_SUFFIX, shape=buffer.shapes.shape, chunks=buffer.shapes.shape, dtype="int32",
                                                     fill_value=0, compressors=_COMPRESSORS)
                    shapes[:] = buffer.shapes
            # The completion marker goes last: a store without it is never accepted.
            marker = {"format_version": FORMAT_VERSION, "kind": self.kind, "complete": True, "shards": _shard_files(self.tmp_path)}
            self.group.attrs.update({"ids": self.ids, **self.attrs, MARKER: marker})
        except BaseException:
            discard(self.tmp_path)
            raise
        commit(self.tmp_path, self.path)


def _shard_files(root: Path) -> dict[str, list[str]]:
    """Per array, the chunk (shard) files present under its ``c/`` folder, as sorted relative paths."""
    files: dict[str, list[str]] = {}
    for array_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        chunks = array_dir / "c"
        files[array_dir.name] = sorted(str(f.relative_to(array_dir)) for f in chunks.rglob("*") if f.is_file()) if chunks.is_dir() else []
    return files


def damaged(path: Path, kind: str, what: str) -> ArtifactError:
    """The error for a store whose files do not match what was written, with both fixes."""
    stage = _WRITER_STAGE.get(kind, kind)
    return ArtifactError(f"{path} is damaged: {what}; restore it with `dvc checkout {path}`, "
                         f"or recompute it with `dvc repro --force {stage}`")


class Artifact:
    """Read-only view of a complete, undamaged store of the expected kind."""

    def __init__(self, path: str | os.PathLike, kind: str):
        self.path = Path(path)
        if not self.path.exists():
            raise ArtifactError(f"{self.path} does not exist: run the stage that writes it (`dvc repro`), or `dvc pull` it")
        try:
            self.group = zarr.open_group(str(self.path), mode="r", zarr_format=3)
        except Exception as error:  # zarr raises several types for a non-store directory
            raise ArtifactError(f"{self.path} is not a zarr v3 store ({error}); delete it and rerun the stage that writes it") from error
        marker = self.group.attrs.get(MARKER)
        if not isinstance(marker, dict):
            raise ArtifactError(f"{self.path} was not written by vit-wsss (no '{MARKER}' attribute); delete it and rerun its stage")
        if not marker.get("complete"):
            raise ArtifactError(f"{self.path} is incomplete (an interrupted write); delete it and rerun its stage")
        if marker.get("format_version") != FORMAT_VERSION:
            raise ArtifactError(f"{self.path} has format version {marker.get('format_version')}, this code reads {FORMAT_VERSION}; rerun its stage")
        if marker.get("kind") != kind:
            raise ArtifactError(f"{self.path} holds '{marker.get('kind')}', expected '{kind}'")
        self.kind = kind
        for array_name, files in marker.get("shards", {}).items():
            missing = [f for f in files if not (self.path / array_name / f).is_file()]
            if missing:
                raise damaged(self.path, kind, f"array '{array_name}' lost {len(missing)} of its {len(files)} shard files (e.g. {missing[0]})")
        self.attrs: dict[str, Any] = {k: v for k, v in self.group.attrs.items() if k != MARKER}
        self.ids: list[str] = list(self.attrs.pop("ids"))
        # Opened once: each group lookup reads metadata from disk, which dominated per-image reads.
        self._arrays: dict[str, zarr.Array] = {name: array for name, array in self.group.arrays()}

    def __len__(self) -> int:
        return len(self.ids)

    def names(self) -> list[str]:
        return sorted(name for name in self._arrays if not name.endswith(SHAPE_SUFFIX))

    def array(self, name: str) -> zarr.Array:
        if name not in self._arrays:
            raise ArtifactError(f"{self.path} has no array '{name}' (it has {', '.join(self.names())})")
        return self._arrays[name]

    def _get(self, name: str, selection: Any) -> np.ndarray:
        array = self.array(name)
        try:
            return array[selection]
        except Exception as error:  # zarr/numcodecs raise ValueError, RuntimeError... for corrupt bytes
            raise damaged(self.path, self.kind, f"array '{name}' cannot be decoded ({type(error).__name__}: {error})") from None

    def read(self, name: str, index: int) -> np.ndarray:
        """Item `index` of `name`, cropped to its true shape when the array is padded."""
        value = self._get(name, index)
        if name + SHAPE_SUFFIX in self._arrays:
            shape = self._get(name + SHAPE_SUFFIX, index)
            value = value[tuple(slice(0, int(s)) for s in shape)]
        return value

    def iter_rows(self, name: str, rows: Iterable[int]) -> Iterator[np.ndarray]:
        """Items `rows` of `name` in that order, each cropped to its true shape. A whole shard is
        read when a row leaves the one in hand: one zarr call per shard instead of one per item
        (about 50x fewer for ascending rows; any order is correct, ascending is fastest)."""
        array = self.array(name)
        shard = array.shards[0] if array.shards else array.chunks[0]
        shapes = self.read_all(name + SHAPE_SUFFIX) if name + SHAPE_SUFFIX in self._arrays else None
        first, block = -1, None
        for row in rows:
            row = int(row)
            if block is None or not first <= row < first + shard:
                first = row - row % shard
                block = self._get(name, slice(first, first + shard))
            value = block[row - first]
            if shapes is not None:
                value = value[tuple(slice(0, int(s)) for s in shapes[row])]
            yield value.copy()  # not a view: it would keep the whole shard alive

    def read_all(self, name: str) -> np.ndarray:
        """The whole (padded) array in memory; for small per-image records."""
        return self._get(name, slice(None))

    def index_of(self, image_id: str) -> int:
        try:
            return self.ids.index(image_id)
        except ValueError:
            raise ArtifactError(f"{self.path} has no image '{image_id}'") from None


def require_same_ids(reference: Artifact, other: Artifact) -> None:
    """Stop with a clear message when two stores do not describe the same images in order."""
    if reference.ids != other.ids:
        missing = sorted(set(reference.ids) - set(other.ids))[:5]
        raise ArtifactError(
            f"{other.path} does not cover the images of {reference.path} in the same order"
            + (f" (missing e.g. {missing})" if missing else "")
            + f"; rerun the stage that writes {other.path.name}"
        )
