import hashlib
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.artifacts import Artifact, ArtifactError, ArtifactWriter, require_same_ids


def _write(path: Path, n: int = 10, shard_size: int = 4) -> None:
    ids = [f"img{i}" for i in range(n)]
    with ArtifactWriter(path, "cams", ids, {"class_names": ["a", "b"]}, shard_size=shard_size) as out:
        out.create("cams", (2, 3, 3), "float16")
        out.create("labels", (8, 8), "uint8", max_shape=True)
        for i in reversed(range(n)):  # out of order on purpose: shards are buffered
            out.write("cams", i, np.full((2, 3, 3), i, dtype=np.float16))
            out.write("labels", i, np.full((i % 8 + 1, 5), i, dtype=np.uint8))


def _digest(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.rglob("*")) if p.is_file()}


def test_round_trip_with_padding_and_attrs(tmp_path):
    _write(tmp_path / "a.zarr")
    store = Artifact(tmp_path / "a.zarr", "cams")
    assert store.ids == [f"img{i}" for i in range(10)]
    assert store.attrs == {"class_names": ["a", "b"]}
    assert np.all(store.read("cams", 7) == 7)
    assert store.read("labels", 3).shape == (4, 5)
    assert np.all(store.read("labels", 3) == 3)
    assert store.array("labels").shape == (10, 8, 8)


def test_iter_rows_equals_read_in_any_order(tmp_path):
    _write(tmp_path / "a.zarr", n=10, shard_size=4)
    store = Artifact(tmp_path / "a.zarr", "cams")
    rows = [0, 1, 5, 9, 2, 2, 8, 3]  # ascending runs, a step back across shards, a repeat
    for name in ("cams", "labels"):
        items = list(store.iter_rows(name, rows))
        assert len(items) == len(rows)
        for row, item in zip(rows, items):
            np.testing.assert_array_equal(item, store.read(name, row))
    assert [item.shape for item in store.iter_rows("labels", [1, 7])] == [(2, 5), (8, 5)]  # cropped to the true shape


def test_sharded_store_is_a_handful_of_files(tmp_path):
    _write(tmp_path / "a.zarr", n=10, shard_size=4)
    data_files = [p for p in (tmp_path / "a.zarr").rglob("*") if p.is_file() and p.name != "zarr.json"]
    # 3 shards for each of the two arrays plus one for the shapes array, not one file per image.
    assert len(data_files) == 7


def test_same_inputs_give_byte_identical_stores(tmp_path):
    _write(tmp_path / "a.zarr")
    _write(tmp_path / "b.zarr")
    assert _digest(tmp_path / "a.zarr") == _digest(tmp_path / "b.zarr")


def test_interrupted_write_leaves_nothing_a_reader_accepts(tmp_path):
    path = tmp_path / "a.zarr"
    with pytest.raises(RuntimeError):
        with ArtifactWriter(path, "cams", ["x", "y"]) as out:
            out.create("cams", (2,), "float32")
            out.write("cams", 0, np.ones(2))
            raise RuntimeError("killed")
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []  # the temporary directory is removed too
    with pytest.raises(ArtifactError, match="does not exist"):
        Artifact(path, "cams")


def test_previous_store_survives_a_failed_rewrite(tmp_path):
    path = tmp_path / "a.zarr"
    _write(path)
    with pytest.raises(RuntimeError):
        with ArtifactWriter(path, "cams", ["x"]) as out:
            out.create("cams", (2,), "float32")
            raise RuntimeError("killed")
    assert Artifact(path, "cams").ids[0] == "img0"


def test_store_without_completion_marker_is_refused(tmp_path):
    # What a crash inside zarr would leave if the temporary directory were renamed by hand.
    import zarr

    group = zarr.open_group(str(tmp_path / "half.zarr"), mode="w", zarr_format=3)
    group.attrs["ids"] = ["x"]
    group.attrs["vit_wsss"] = {"format_version": 1, "kind": "cams", "complete": False}
    with pytest.raises(ArtifactError, match="incomplete"):
        Artifact(tmp_path / "half.zarr", "cams")


def test_foreign_and_wrong_kind_stores_are_refused(tmp_path):
    import zarr

    zarr.open_group(str(tmp_path / "foreign.zarr"), mode="w", zarr_format=3).attrs["x"] = 1
    with pytest.raises(ArtifactError, match="not written by vit-wsss"):
        Artifact(tmp_path / "foreign.zarr", "cams")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ArtifactError):
        Artifact(tmp_path / "plain", "cams")
    _write(tmp_path / "a.zarr")
    with pytest.raises(ArtifactError, match="expected 'refined'"):
        Artifact(tmp_path / "a.zarr", "refined")


def test_missing_items_and_bad_shapes_fail_the_write(tmp_path):
    with pytest.raises(ArtifactError, match="never written"):
        with ArtifactWriter(tmp_path / "a.zarr", "cams", ["x", "y"]) as out:
            out.create("cams", (2,), "float32")
            out.write("cams", 0, np.ones(2))
    with pytest.raises(ArtifactError, match="exceeds"):
        with ArtifactWriter(tmp_path / "b.zarr", "cams", ["x"]) as out:
            out.create("labels", (4, 4), "uint8", max_shape=True)
            out.write("labels", 0, np.ones((5, 4)))
    assert not (tmp_path / "a.zarr").exists() and not (tmp_path / "b.zarr").exists()


def test_require_same_ids_names_the_store(tmp_path):
    _write(tmp_path / "a.zarr", n=4)
    _write(tmp_path / "b.zarr", n=3)
    with pytest.raises(ArtifactError, match="b.zarr"):
        require_same_ids(Artifact(tmp_path / "a.zarr", "cams"), Artifact(tmp_path / "b.zarr", "cams"))


def _shard_files(path: Path, array: str) -> list[Path]:
    return sorted((path / array).glob("c.*"))


def test_shard_files_sit_beside_their_array_metadata(tmp_path):
    # No folder per shard: DVC walks every folder of a store on each status (pipeline/core/artifacts.py).
    path = tmp_path / "a.zarr"
    _write(path)
    assert [p.name for p in (path / "cams").iterdir() if p.is_dir()] == []
    assert [p.name for p in _shard_files(path, "cams")] == ["c.0.0.0.0", "c.1.0.0.0", "c.2.0.0.0"]


def test_a_missing_shard_is_named_with_the_fix(tmp_path):
    path = tmp_path / "a.zarr"
    _write(path)
    _shard_files(path, "cams")[1].unlink()  # zarr alone would read the lost images as zeros
    with pytest.raises(ArtifactError, match=r"damaged: array 'cams' lost 1 of its 3 shard files.*dvc checkout .*a\.zarr.*dvc repro --force cams"):
        Artifact(path, "cams")


def test_a_flipped_byte_in_chunk_data_is_detected_when_read(tmp_path):
    path = tmp_path / "a.zarr"
    _write(path)
    shard = _shard_files(path, "cams")[0]
    data = bytearray(shard.read_bytes())
    data[10] ^= 0xFF  # inside the first stored chunk (image 1; image 0 is all fill value, so not stored)
    shard.write_bytes(bytes(data))
    store = Artifact(path, "cams")
    assert np.all(store.read("cams", 3) == 3)  # other chunks still read
    with pytest.raises(ArtifactError, match=r"damaged: array 'cams' cannot be decoded.*dvc checkout"):
        store.read("cams", 1)


def test_an_array_of_fill_values_has_no_shards_and_is_accepted(tmp_path):
    path = tmp_path / "a.zarr"
    with ArtifactWriter(path, "cams", ["x", "y"]) as out:
        out.create("cams", (2,), "float32")
        out.write("cams", 0, np.zeros(2))
        out.write("cams", 1, np.zeros(2))
    assert np.all(Artifact(path, "cams").read_all("cams") == 0)
