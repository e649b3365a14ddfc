"""The Parquet sink with `image_root`: images staged as the paths of their files, their
bytes read into the shards a row group at a time; image bytes written plain."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from imagetask.build._schema import image_type
from imagetask.errors import RunError, SinkError
from imagetask.io import _parquet
from imagetask.io._image_files import ImageFiles, MissingImageFile
from imagetask.io._parquet import ParquetSink

IMAGES = "artifacts/task/images"


def image_file(out: Path, name: str, size: int) -> tuple[str, bytes]:
    """An image file of `size` random bytes under `out`: its relative path and bytes."""
    data = b"\x89PNG" + os.urandom(size - 4)
    folder = out / IMAGES
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    return f"{IMAGES}/{name}", data


def table(images: list[dict[str, object] | None], first: int = 0) -> pa.Table:
    return pa.table(
        {
            "prompt": [f"p{first + i}" for i in range(len(images))],
            "image": pa.array(images, image_type()),
            "image_path": [None if image is None else image["path"] for image in images],
        }
    )


def sink(out: Path, state: dict[str, object] | None = None, **options: object) -> ParquetSink:
    return ParquetSink(out, state, path_column="image_path", image_root=out, **options)


def shard_rows(out: Path) -> list[dict[str, object]]:
    return [
        row
        for shard in sorted((out / "data").iterdir())
        for row in pq.read_table(shard).to_pylist()
    ]


def test_path_only_images_are_staged_as_paths_and_shards_hold_their_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_parquet, "ROW_GROUP_BYTES", 250_000)
    made = [image_file(tmp_path, f"{i}.png", 100_000) for i in range(5)]
    inline = b"\x89PNG inline"
    images: list[dict[str, object] | None] = [{"bytes": None, "path": path} for path, _ in made]
    images[2] = {"bytes": inline, "path": None}
    images.insert(3, None)
    out = sink(tmp_path)
    out.write_table(table(images))
    staged = sum(file["bytes"] for file in out.state()["staged"])
    assert staged < 10_000  # the paths, not the 400 kB of the files
    out.finish(True, "about")
    out.close()
    expected = [{"bytes": data, "path": path} for path, data in made]
    expected[2] = {"bytes": inline, "path": None}
    expected.insert(3, None)
    assert [row["image"] for row in shard_rows(tmp_path)] == expected
    metadata = pq.read_metadata(tmp_path / "data/train-00000.parquet")
    # 100 kB files, 250 kB row groups: two files a group, the small rows with the first.
    assert [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)] == [4, 2]
    columns = {
        metadata.row_group(0).column(i).path_in_schema: metadata.row_group(0).column(i)
        for i in range(metadata.num_columns)
    }
    assert columns["image.bytes"].compression == "UNCOMPRESSED"
    assert not columns["image.bytes"].is_stats_set
    assert "RLE_DICTIONARY" not in columns["image.bytes"].encodings
    assert columns["prompt"].compression == "SNAPPY"
    assert columns["prompt"].is_stats_set


def test_lists_of_path_only_images_get_their_bytes(tmp_path: Path) -> None:
    (first, one), (second, two) = (image_file(tmp_path, f"{i}.png", 1_000) for i in range(2))
    column = pa.array(
        [
            [{"bytes": None, "path": first}],
            None,
            [{"bytes": b"x", "path": None}, {"bytes": None, "path": second}],
        ],
        pa.list_(image_type()),
    )
    files = ImageFiles(tmp_path)
    assert files.sizes(column) == [1_000, 0, 1_000]
    assert files.filled(column).to_pylist() == [
        [{"bytes": one, "path": first}],
        None,
        [{"bytes": b"x", "path": None}, {"bytes": two, "path": second}],
    ]


def test_a_chunked_column_is_weighed_chunk_by_chunk_with_its_rows_counted_whole(
    tmp_path: Path,
) -> None:
    path, _ = image_file(tmp_path, "0.png", 1_000)
    kind = image_type()
    held = pa.array([{"bytes": b"x", "path": None}], kind)
    named = pa.array([None, {"bytes": None, "path": path}], kind)
    files = ImageFiles(tmp_path)
    assert files.sizes(pa.chunked_array([held, held], kind)) == [0, 0]
    assert files.sizes(pa.chunked_array([held, named, held], kind)) == [0, 0, 1_000, 0]
    assert files.sizes(pa.chunked_array([], kind)) == []
    gone = pa.array([{"bytes": None, "path": f"{IMAGES}/gone.png"}], kind)
    with pytest.raises(MissingImageFile) as raised:
        files.sizes(pa.chunked_array([held, named, gone], kind))
    assert (raised.value.row, raised.value.path) == (3, f"{IMAGES}/gone.png")


def test_shards_count_the_bytes_of_the_files_their_rows_name(tmp_path: Path) -> None:
    out = sink(tmp_path, shard_bytes=250_000)
    for i in range(5):
        path, _ = image_file(tmp_path, f"{i}.png", 100_000)
        out.write_table(table([{"bytes": None, "path": path}], first=i))
    out.finish(True, "about")
    out.close()
    shards = sorted((tmp_path / "data").iterdir())
    assert [pq.read_metadata(shard).num_rows for shard in shards] == [3, 2]


def test_a_batch_naming_a_missing_file_is_refused_with_its_row(tmp_path: Path) -> None:
    path, _ = image_file(tmp_path, "0.png", 1_000)
    out = sink(tmp_path)
    images = [{"bytes": None, "path": path}, {"bytes": None, "path": f"{IMAGES}/gone.png"}]
    with pytest.raises(SinkError) as raised:
        out.write_table(table(images))
    assert str(raised.value) == (
        f"{tmp_path / 'data'}: row 1 names the image file '{IMAGES}/gone.png': "
        "No such file or directory"
    )
    assert out.state() == {"rows": 0, "shards": [], "staged": []}
    outside = [{"bytes": None, "path": "../elsewhere.png"}]
    with pytest.raises(SinkError) as raised:
        out.write_table(table(outside))
    assert str(raised.value) == (
        f"{tmp_path / 'data'}: row 0 names the image file '../elsewhere.png': not a path "
        "inside the output folder"
    )
    out.close()


def test_a_resume_refuses_staged_rows_whose_file_is_gone(tmp_path: Path) -> None:
    path, _ = image_file(tmp_path, "0.png", 1_000)
    out = sink(tmp_path)
    out.write_table(table([{"bytes": None, "path": path}]))
    out.sync()
    state = out.state()
    out.close()
    (tmp_path / path).unlink()
    with pytest.raises(RunError, match=f"row 0 names the image file '{path}': No such file"):
        sink(tmp_path, state)


def test_without_image_root_path_only_images_are_written_as_they_are(tmp_path: Path) -> None:
    out = ParquetSink(tmp_path, path_column="image_path")
    images = [{"bytes": None, "path": f"{IMAGES}/gone.png"}]
    out.write_table(table(images))
    out.finish(True, "about")
    out.close()
    assert [row["image"] for row in shard_rows(tmp_path)] == images


def test_a_missing_image_file_pickles() -> None:
    import pickle

    error = MissingImageFile(3, "a.png", "gone")
    again = pickle.loads(pickle.dumps(error))
    assert (again.row, again.path, again.reason, str(again)) == (
        3,
        "a.png",
        "gone",
        "row 3 names the image file 'a.png': gone",
    )
