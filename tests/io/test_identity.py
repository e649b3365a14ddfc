"""The output identity: what a resume compares and the `datasets` fingerprint hashes. The
hidden parts of a URL (user info, query) count, as keyed digests; an API key does not."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from imagetask import ImageGeneration
from imagetask.config import load_object
from imagetask.io._identity import KEY_FILE, UrlDigests, folder_key, output_identity
from imagetask.models import OpenAIImageGeneration, PlaceholderImageGeneration

BASE = "https://images.example/v1"


def identity(task: ImageGeneration, key: str = "00" * 32) -> dict[str, Any]:
    return output_identity(task.dump(), UrlDigests.of(task, key))


def openai_task(base_url: str, api_key: str = "sk-one", **fields: Any) -> ImageGeneration:
    model = OpenAIImageGeneration(model="gpt-image-1", base_url=base_url, api_key=api_key)
    return ImageGeneration(image_generation_model=model, **fields)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (f"{BASE}?deployment=a", f"{BASE}?deployment=b"),
        ("https://me:pw-1@images.example/v1", "https://me:pw-2@images.example/v1"),
        ("https://tok-1@images.example/v1", "https://tok-2@images.example/v1"),
        (BASE, f"{BASE}?deployment=a"),
    ],
)
def test_the_hidden_parts_of_a_url_count(first: str, second: str) -> None:
    assert identity(openai_task(first)) != identity(openai_task(second))
    assert identity(openai_task(first)) == identity(openai_task(first, api_key="sk-rotated"))


def test_a_hidden_part_is_kept_as_a_keyed_digest_only() -> None:
    task = openai_task("https://me:pw-1@images.example/v1?deployment=secret-a")
    digests = UrlDigests.of(task, "11" * 32)
    [(path, digest)] = digests.digests.items()
    assert path == "image_generation_model.base_url"
    assert len(digest) == 64
    assert UrlDigests.of(task, "22" * 32).digests[path] != digest  # keyed
    assert UrlDigests.of(task).key != UrlDigests.of(task).key  # a new key each time
    text = json.dumps(output_identity(task.dump(), digests))
    assert "secret-a" not in text and "pw-1" not in text and "sk-one" not in text
    assert output_identity(task.dump(), digests)["image_generation_model"]["base_url"] == {
        "url": "https://me:**********@images.example/v1?**********",
        "hidden": digest,
    }
    assert UrlDigests.of(openai_task(BASE)).digests == {}


def test_fields_that_change_how_rows_are_made_do_not_count() -> None:
    task = openai_task(BASE)
    other = openai_task(BASE, input_batch_size=7)
    other.image_generation_model.set_runtime_parameters({"max_concurrency": 3})
    assert identity(task) == identity(other)


def test_the_folder_key_is_made_once_and_kept_for_its_owner(tmp_path: Path) -> None:
    key = folder_key(tmp_path)
    assert len(bytes.fromhex(key)) == 32
    assert folder_key(tmp_path) == key
    assert (tmp_path / KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert sorted(path.name for path in tmp_path.iterdir()) == [KEY_FILE]


OLD_MODULES = {
    "imagetask.task": "imagetask.generation",
    "imagetask.models": "imagetask.models.placeholder",
}
"""Where a dump written before the package was laid out by layer names its classes."""


def with_old_modules(value: Any) -> Any:
    """`value` (JSON data) with its `type_info` naming the modules of the flat package."""
    if isinstance(value, list):
        return [with_old_modules(item) for item in value]
    if not isinstance(value, dict):
        return value
    out = {name: with_old_modules(item) for name, item in value.items()}
    if isinstance(value.get("type_info"), dict):
        module = value["type_info"]["module"]
        out["type_info"] = {**value["type_info"], "module": OLD_MODULES.get(module, module)}
    return out


def test_a_run_written_before_the_package_moved_resumes(tmp_path: Path) -> None:
    rows = [{"prompt": f"p{i}"} for i in range(5)]
    out = tmp_path / "out"
    task = ImageGeneration(image_generation_model=PlaceholderImageGeneration(size="4x4"))
    task.run(rows, out, limit=2)
    for name in ("checkpoint.json", "run.json"):
        data = json.loads((out / name).read_text())
        (out / name).write_text(json.dumps(with_old_modules(data)))
    assert '"imagetask.generation"' in (out / "checkpoint.json").read_text()
    summary = task.run(rows, out, resume=True)
    assert (summary.resumed_from, summary.rows_in, summary.complete) == (2, 5, True)
    lines = (out / "data.jsonl").read_text().splitlines()
    assert [json.loads(line)["prompt"] for line in lines] == [f"p{i}" for i in range(5)]


def test_a_dump_written_before_the_package_moved_loads() -> None:
    task = ImageGeneration(image_generation_model=PlaceholderImageGeneration(size="4x4"))
    old = with_old_modules(task.dump())
    assert old["type_info"] == {"module": "imagetask.generation", "name": "ImageGeneration"}
    loaded = load_object(old)
    assert type(loaded) is ImageGeneration
    assert loaded.dump() == task.dump()
    assert output_identity(old, None) == output_identity(task.dump(), None)
