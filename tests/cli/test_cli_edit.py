"""`imagetask edit`: editing runs from JSONL, CSV, Parquet and a folder of images."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from imagetask.cli import main
from tests.support.payloads import ref
from tests.support.repository import EXAMPLES

EDIT = EXAMPLES / "edit"


def rows_of(out: Path) -> list[dict[str, object]]:
    return [msgspec.json.decode(line) for line in (out / "data.jsonl").read_bytes().splitlines()]


def png(color: str, size: tuple[int, int] = (8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_edit_the_shipped_folder_of_images(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    status = main(["edit", str(EDIT), "-o", str(out), "--num-generations", "2", "--quiet"])
    assert status == 0
    captions = [json.loads(line) for line in (EDIT / "captions.jsonl").read_text().splitlines()]
    rows = rows_of(out)
    assert [(row["image"], row["prompt"]) for row in rows] == [
        (caption["image"], caption["prompt"]) for caption in captions for _ in range(2)
    ]
    assert len({row["edited_image"] for row in rows}) == 4
    for row in rows:
        meta = row["distilabel_metadata"]
        assert isinstance(meta, dict)
        source = (EDIT / str(row["image"])).read_bytes()
        assert json.loads(meta["raw_input_image_editing_0"]) == {
            "prompt": row["prompt"],
            "images": [ref(source)],
        }
    assert capsys.readouterr().out.startswith("imagetask: 2 rows in, 4 rows out (4 images,")


def test_csv_paths_are_read_from_the_input_folder_and_not_outside_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(png("red"))
    (tmp_path / "secret.png").write_bytes(png("blue"))
    (folder / "rows.csv").write_text("photo,instruction\na.png,blue\n../secret.png,red\n")
    args = ["edit", str(folder / "rows.csv"), "--image-column", "photo"]
    args += ["--column", "prompt=instruction", "--quiet"]
    assert main([*args, "-o", str(tmp_path / "refused")]) == 1
    err = capsys.readouterr().err
    assert "column 'photo': names a file outside" in err
    assert "'../secret.png'" in err
    assert main([*args, "-o", str(tmp_path / "out"), "--allow-outside-paths"]) == 0
    rows = rows_of(tmp_path / "out")
    assert [(row["photo"], row["instruction"]) for row in rows] == [
        ("a.png", "blue"),
        ("../secret.png", "red"),
    ]


def test_parquet_image_structs_with_a_mask_to_parquet_with_artifacts_and_resume(
    tmp_path: Path,
) -> None:
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table(
        {
            "photo": pa.array([{"bytes": png("red"), "path": None}] * 3, image),
            "mask": pa.array([{"bytes": png("white"), "path": None}] * 3, image),
            "prompt": ["one", "two", "three"],
        }
    )
    pq.write_table(table, tmp_path / "in.parquet")
    out = tmp_path / "out"
    args = ["edit", str(tmp_path / "in.parquet"), "-o", str(out), "--image-column", "photo"]
    args += ["--mask-column", "mask", "--format", "parquet", "--save-artifacts", "--quiet"]
    assert main([*args, "--limit", "2"]) == 0
    assert main([*args, "--resume"]) == 0
    written = pq.read_table(out / "data")
    assert written.column("prompt").to_pylist() == ["one", "two", "three"]
    assert written.schema.field("edited_image").type == image
    assert written.schema.field("photo").type == image
    card = json.loads(written.schema.metadata[b"huggingface"])["info"]["features"]
    assert (card["photo"], card["mask"], card["edited_image"]) == ({"_type": "Image"},) * 3
    paths = written.column("image_path").to_pylist()
    assert all((out / path).is_file() for path in paths)
    edited = [cell["bytes"] for cell in written.column("edited_image").to_pylist()]
    assert [(out / path).read_bytes() for path in paths] == edited
    assert len(set(edited)) == 3


def test_a_folder_without_captions_and_the_batch_api_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["edit", str(tmp_path), "-o", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err == (
        f"imagetask: error: INPUT: the folder {str(tmp_path)!r} has no captions.jsonl or "
        "captions.csv\n"
    )
    folder = tmp_path / "edit"
    shutil.copytree(EDIT, folder)
    status = main(["edit", str(folder), "-o", str(tmp_path / "o"), "--model", "openai-batch:x"])
    assert status == 1
    assert "the Batch API does not edit images" in capsys.readouterr().err
