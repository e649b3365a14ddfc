"""Image artifacts: content-addressed files, written whole, paths set after the write."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from imagetask import (
    ConfigError,
    ImageGeneration,
    RunError,
)
from imagetask.models import PlaceholderImageGeneration
from imagetask.testing import ScriptedModel
from tests.support.payloads import b64

META = "distilabel_metadata"
ERROR = "error_image_generation_0"
FOLDER = "artifacts/image_generation_0/images"


def png(colour: tuple[int, ...], mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, (4, 4), colour).save(out, format="PNG")
    return out.getvalue()


RED = png((255, 0, 0))
BLUE = png((0, 0, 255))


def name_of(data: bytes, ext: str) -> str:
    return f"{FOLDER}/{hashlib.sha256(data).hexdigest()}.{ext}"


def files(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in (root / FOLDER).iterdir())


def task_for(model: Any, root: Path, **fields: Any) -> ImageGeneration:
    return ImageGeneration(
        image_generation_model=model, save_artifacts=True, output_dir=str(root), **fields
    )


def test_each_image_is_written_under_its_hash(tmp_path: Path) -> None:
    task = task_for(PlaceholderImageGeneration(size="8x8"), tmp_path, num_generations=2)
    rows = task.process_batch([{"prompt": "a"}, {"prompt": "b"}])
    images = [base64.b64decode(row["image"]) for row in rows]
    assert [row["image_path"] for row in rows] == [name_of(image, "png") for image in images]
    for row, image in zip(rows, images, strict=True):
        assert (tmp_path / row["image_path"]).read_bytes() == image
    assert files(tmp_path) == sorted(name_of(image, "png") for image in images)
    metadata = json.loads((tmp_path / "artifacts/image_generation_0/metadata.json").read_text())
    assert metadata == {
        "type": "image",
        "task": "image_generation_0",
        "model_name": "placeholder",
        "naming": "sha256 of the file's bytes, extension from its format",
        "format": "as generated",
    }


def test_identical_images_are_stored_once_and_different_ones_never_collide(
    tmp_path: Path,
) -> None:
    red, blue = png((255, 0, 0)), png((0, 0, 255))
    model = ScriptedModel([[{"images": [b64(red)]}], [{"images": [red]}], [{"images": [blue]}]])
    rows = task_for(model, tmp_path).process_batch([{"prompt": "same"}] * 3)
    assert [row["image_path"] for row in rows] == [
        name_of(red, "png"),
        name_of(red, "png"),
        name_of(blue, "png"),
    ]
    assert files(tmp_path) == sorted({name_of(red, "png"), name_of(blue, "png")})


def test_grouped_rows_get_a_list_of_paths_and_failures_get_none(tmp_path: Path) -> None:
    red = png((255, 0, 0))
    model = ScriptedModel([[{"images": [b64(red)]}], RuntimeError("down")])
    task = task_for(model, tmp_path, num_generations=2, group_generations=True)
    rows = task.process_batch([{"prompt": "a"}, {"prompt": "b"}])
    assert rows[0]["image_path"] == [name_of(red, "png"), None]
    assert rows[1]["image_path"] == [None, None]


def test_the_model_format_is_kept_unless_another_is_asked(tmp_path: Path) -> None:
    red = png((200, 10, 10))
    model = ScriptedModel([[{"images": [b64(red)]}]])
    rows = task_for(model, tmp_path, image_format="PNG").process_batch([{"prompt": "a"}])
    assert rows[0]["image_path"] == name_of(red, "png")

    converted = task_for(model, tmp_path / "jpeg", image_format="JPEG")
    [row] = converted.process_batch([{"prompt": "a"}])
    written = (tmp_path / "jpeg" / row["image_path"]).read_bytes()
    assert row["image_path"] == name_of(written, "jpg")
    assert Image.open(io.BytesIO(written)).format == "JPEG"
    assert row["image"] == b64(red)


def test_an_image_that_cannot_be_converted_fails_its_row_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rgba, rgb = png((1, 2, 3, 4), "RGBA"), png((1, 2, 3))
    model = ScriptedModel([[{"images": [b64(rgba)]}], [{"images": [b64(rgb)]}]])
    task = task_for(model, tmp_path, image_format="JPEG")
    rows = task.process_batch([{"prompt": "a"}, {"prompt": "b"}])
    assert rows[0]["image"] == b64(rgba)
    assert rows[0]["image_path"] is None
    assert rows[0][META][ERROR] == (
        "the image artifact was not saved: OSError: cannot write mode RGBA as JPEG"
    )
    assert rows[1]["image_path"] is not None and ERROR not in rows[1][META]
    assert "failed for row 0, generation 0: the image artifact was not saved" in caplog.text


def test_bytes_in_no_image_format_are_not_saved(tmp_path: Path) -> None:
    model = ScriptedModel([[{"images": [b64(b"hello")]}]])
    [row] = task_for(model, tmp_path).process_batch([{"prompt": "a"}])
    assert row["image_path"] is None
    assert row[META][ERROR] == (
        "the image artifact was not saved: the image bytes are in no known image format "
        "(first bytes: 68 65 6c 6c 6f)"
    )


@pytest.mark.parametrize("grouped", [False, True])
def test_artifacts_not_saved_name_their_input_row_and_generation(
    tmp_path: Path, grouped: bool
) -> None:
    answers = [[{"images": [b64(b"bad a0"), b64(RED)]}], [{"images": [b64(BLUE), b64(b"bad b1")]}]]
    task = task_for(ScriptedModel(answers), tmp_path, num_generations=2, group_generations=grouped)
    batch = task.prepare([{"prompt": "a"}, {"prompt": "b"}])
    batch.generate()
    output = batch.finish()
    assert [(f.row, f.generation) for f in output.failures] == [(0, 0), (1, 1)]
    assert len(output.rows) == (2 if grouped else 4)


def test_a_run_whose_artifacts_fail_records_each_failure_once(tmp_path: Path) -> None:
    answers = [[{"images": [b64(b"bad"), b64(RED)]}], [{"images": [b64(BLUE), b64(b"bad")]}]]
    task = task_for(ScriptedModel(answers), tmp_path, num_generations=2, input_batch_size=2)
    summary = task.run([{"prompt": "a"}, {"prompt": "b"}], tmp_path / "out")
    assert (summary.rows_out, summary.failed) == (4, 2)


def test_no_temporary_file_is_left(tmp_path: Path) -> None:
    task = task_for(PlaceholderImageGeneration(size="4x4"), tmp_path, num_generations=3)
    task.process_batch([{"prompt": str(i)} for i in range(20)])
    leftovers = [p.name for p in (tmp_path / "artifacts").rglob("*") if p.name.startswith(".")]
    assert leftovers == []
    assert len(files(tmp_path)) == 60


def test_metadata_json_follows_the_umask_as_the_images_do(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        task = task_for(PlaceholderImageGeneration(size="4x4"), tmp_path)
        task.process_batch([{"prompt": "a"}])
    finally:
        os.umask(old)
    metadata = tmp_path / "artifacts" / "image_generation_0" / "metadata.json"
    (image,) = (tmp_path / FOLDER).iterdir()
    assert json.loads(metadata.read_text())["task"] == "image_generation_0"
    assert (metadata.stat().st_mode & 0o777, image.stat().st_mode & 0o777) == (0o640, 0o640)


# --- artifacts from many threads ------------------------------------------------------


def test_threads_saving_artifacts_into_a_fresh_folder_lose_nothing(tmp_path: Path) -> None:
    model = PlaceholderImageGeneration(size="4x4")
    errors: list[BaseException] = []
    results: dict[int, list[dict[str, Any]]] = {}

    def work(index: int) -> None:
        task = ImageGeneration(
            image_generation_model=model, save_artifacts=True, output_dir=str(tmp_path)
        )
        try:
            results[index] = task.process_batch([{"prompt": f"{index}-{i}"} for i in range(5)])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    rows = [row for index in sorted(results) for row in results[index]]
    assert len(rows) == 40
    assert all((tmp_path / row["image_path"]).exists() for row in rows)
    folder = tmp_path / "artifacts" / "image_generation_0"
    assert sorted(p.name for p in folder.iterdir()) == ["images", "metadata.json"]


@pytest.mark.parametrize(
    "link", ["artifacts", "artifacts/image_generation_0", "artifacts/image_generation_0/images"]
)
@pytest.mark.parametrize("resume", [False, True])
def test_an_artifacts_folder_that_is_a_link_is_refused_before_anything_is_written(
    tmp_path: Path, link: str, resume: bool
) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    out = tmp_path / "out"
    rows = [{"prompt": f"p{i}"} for i in range(6)]
    task = ImageGeneration(
        image_generation_model=PlaceholderImageGeneration(size="4x4"),
        input_batch_size=2,
        save_artifacts=True,
    )
    if resume:  # a run folder cloned with a link in place of its artifacts
        task.run(rows, out, limit=2)
        shutil.rmtree(out / link)
        before = (out / "data.jsonl").read_bytes()
    else:
        out.mkdir()
    (out / link).parent.mkdir(parents=True, exist_ok=True)
    (out / link).symlink_to(victim, target_is_directory=True)
    with pytest.raises(RunError) as caught:
        task.run(rows, out, resume=resume)
    assert str(caught.value) == (
        f"{out / link} is a link: imagetask writes no file through a link; remove it and "
        "start again"
    )
    assert list(victim.iterdir()) == []
    if resume:
        assert (out / "data.jsonl").read_bytes() == before
    else:
        assert sorted(path.name for path in out.iterdir()) == [".imagetask.lock", "artifacts"]


def test_a_link_planted_at_an_image_files_name_is_replaced_not_trusted(tmp_path: Path) -> None:
    task = ImageGeneration(
        image_generation_model=PlaceholderImageGeneration(size="4x4"), save_artifacts=True
    )
    rows = [{"prompt": "p0"}, {"prompt": "p1"}]
    task.run(rows, tmp_path / "first")
    images = tmp_path / "out" / "artifacts" / "image_generation_0" / "images"
    images.mkdir(parents=True)
    victim = tmp_path / "victim.png"
    victim.write_bytes(b"not the image")
    names = sorted(
        path.name
        for path in (tmp_path / "first" / images.relative_to(tmp_path / "out")).iterdir()
        if path.suffix == ".png"
    )
    for name in names:
        (images / name).symlink_to(victim)
    task.run(rows, tmp_path / "out")
    assert victim.read_bytes() == b"not the image"
    for line in (tmp_path / "out" / "data.jsonl").read_text().splitlines():
        row = json.loads(line)
        path = tmp_path / "out" / row["image_path"]
        assert not path.is_symlink()
        assert path.read_bytes() == base64.b64decode(row["image"])
    assert len(names) == 2


def test_without_inlined_images_rows_keep_only_the_artifact_path(tmp_path: Path) -> None:
    answers = [[{"images": [b64(RED)]}, {"images": [b64(BLUE)]}], RuntimeError("down")]
    task = task_for(ScriptedModel(answers), tmp_path, num_generations=2, inline_images=False)
    rows = task.process_batch([{"prompt": "a"}, {"prompt": "b"}])
    assert [sorted(row) for row in rows] == [[META, "image_path", "model_name", "prompt"]] * 4
    assert [row["image_path"] for row in rows] == [
        name_of(RED, "png"),
        name_of(BLUE, "png"),
        None,
        None,
    ]
    assert (tmp_path / rows[0]["image_path"]).read_bytes() == RED
    assert rows[2][META][ERROR] == "the model raised RuntimeError: down"
    assert task.output_columns == ["image_path"]


def test_without_inlined_images_grouped_rows_keep_a_list_of_paths(tmp_path: Path) -> None:
    answers = [[{"images": [b64(RED)]}, {"images": [b64(BLUE)]}]]
    task = task_for(
        ScriptedModel(answers),
        tmp_path,
        num_generations=2,
        group_generations=True,
        inline_images=False,
    )
    [row] = task.process_batch([{"prompt": "a"}])
    assert "image" not in row
    assert row["image_path"] == [name_of(RED, "png"), name_of(BLUE, "png")]


def test_without_inlined_images_the_builder_makes_no_base64_text(tmp_path: Path) -> None:
    task = task_for(PlaceholderImageGeneration(size="4x4"), tmp_path, inline_images=False)
    assert task.builds_images_as_received
    assert task.built_outputs == ["image", "image_path"]
    assert not ImageGeneration(image_generation_model=ScriptedModel()).builds_images_as_received


def test_images_are_inlined_unless_artifacts_keep_them() -> None:
    with pytest.raises(ConfigError) as caught:
        ImageGeneration(image_generation_model=ScriptedModel(), inline_images=False)
    assert str(caught.value) == (
        "ImageGeneration: inline_images=False keeps each image only as its artifact file: it "
        "needs save_artifacts=True"
    )


def test_a_parquet_run_keeps_its_images_inlined(tmp_path: Path) -> None:
    task = task_for(PlaceholderImageGeneration(size="4x4"), tmp_path, inline_images=False)
    with pytest.raises(ConfigError) as caught:
        task.run([{"prompt": "a"}], tmp_path / "out", format="parquet")
    assert str(caught.value) == (
        "run: format='parquet' keeps each image's bytes in its shards: inline_images=False is "
        "for JSONL runs"
    )
    assert not (tmp_path / "out").exists()
