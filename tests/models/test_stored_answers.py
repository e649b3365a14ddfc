"""The native answer path: a run's OpenAI answers read natively into an image store, and
the exact errors of a body that is not an Images API answer."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from imagetask import ImageGeneration, _core
from imagetask.errors import ReadError, RequestError
from imagetask.models import OpenAIImageGeneration, PlaceholderImageGeneration
from imagetask.models._store import StoringAnswers
from imagetask.run import run


def image_of(prompt: str, k: int) -> bytes:
    """A PNG-headed image that depends only on its prompt and index."""
    return b"\x89PNG\r\n\x1a\n" + hashlib.sha256(f"{prompt}/{k}".encode()).digest() * 40


class Shapes(ThreadingHTTPServer):
    """Answers `POST /v1/images/generations` with the same images for the same prompt,
    in the shape `shape` says; `GET /files/<prompt>/<k>` serves them."""

    daemon_threads = True
    shape: dict[str, Any]


class Handler(BaseHTTPRequestHandler):
    server: Shapes

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def answer(self, body: bytes, kind: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        _, _, prompt, k = self.path.split("/")
        self.answer(image_of(prompt, int(k)), "image/png")

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        shape = self.server.shape
        if shape.get("body") is not None:
            self.answer(shape["body"], "application/json")
            return
        prompt, n = request["prompt"], request.get("n", 1)
        data = []
        for k in range(n):
            if shape["url"]:
                item: dict[str, Any] = {
                    "url": f"http://127.0.0.1:{self.server.server_port}/files/{prompt}/{k}"
                }
            else:
                item = {"b64_json": base64.b64encode(image_of(prompt, k)).decode()}
            if shape["revised"]:
                item["revised_prompt"] = f"revised {prompt}"
            data.append(item)
        answer: dict[str, Any] = {"created": 1, "data": data}
        if shape["usage"]:
            answer["usage"] = {"input_tokens": 2, "output_tokens": 7 * n, "total_tokens": 2 + 7 * n}
        self.answer(json.dumps(answer).encode(), "application/json")


@pytest.fixture(scope="module")
def shapes() -> Iterator[Shapes]:
    server = Shapes(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def task_of(server: Shapes, options: dict[str, Any]) -> ImageGeneration:
    backend = OpenAIImageGeneration(
        model="dall-e-2",
        base_url=f"http://127.0.0.1:{server.server_port}/v1",
        api_key="k",
        images_per_request=options["per_request"],
        generation_kwargs={"response_format": "url"} if options["url"] else {},
    )
    return ImageGeneration(
        image_generation_model=backend,
        num_generations=options["n"],
        group_generations=options["group"],
        save_artifacts=options["artifacts"],
        inline_images=options["inline"],
        input_batch_size=3,
    )


def test_a_body_of_another_shape_fails_its_rows_naming_the_request(
    shapes: Shapes, tmp_path: Path
) -> None:
    options = {"url": False, "n": 1, "per_request": 1, "group": False}
    options |= {"artifacts": False, "inline": True, "body": b'{"data": null}'}
    shapes.shape = options
    summary = run(task_of(shapes, options), [{"prompt": "a"}, {"prompt": "b"}], tmp_path)
    assert (summary.rows_out, summary.failed) == (2, 2)
    rows = [json.loads(line) for line in (tmp_path / "data.jsonl").read_text().splitlines()]
    assert [row["distilabel_metadata"]["error_image_generation_0"] for row in rows] == [
        "the model raised RequestError: request failed after 1 attempt: RequestError: "
        "the server's answer has no `data` list of images"
    ] * 2


def test_an_image_store_reads_a_body_and_names_what_is_wrong(tmp_path: Path) -> None:
    store = _core.ImageStore(tmp_path)
    png = image_of("x", 0)
    body = {"data": [{"b64_json": base64.b64encode(png).decode(), "revised_prompt": "r"}]}
    answer = store.read_images_body(json.dumps(body | {"usage": {"input_tokens": 1}}).encode())
    [image] = answer.images
    assert isinstance(image, _core.StoredImage)
    assert (image.sha256, image.size, image.format) == (
        hashlib.sha256(png).hexdigest(),
        len(png),
        "png",
    )
    assert image.read() == png and Path(image.path).parent == tmp_path
    assert (answer.revised_prompts, answer.urls, answer.usage) == (
        ["r"],
        [None],
        '{"input_tokens": 1}',
    )
    with pytest.raises(RequestError) as error:
        store.read_images_body(b'{"data": [{"revised_prompt": "r"}]}')
    assert str(error.value) == (
        "the server returned an image with neither b64_json nor url (item 0 of `data`)"
    )
    with pytest.raises(RequestError, match=r"^the server's answer is not an Images API body: EOF"):
        store.read_images_body(b'{"data": [')


def test_a_stored_image_reads_as_a_json_string_and_names_a_file_changed_since(
    tmp_path: Path,
) -> None:
    png = image_of("x", 0) * 2000
    image = _core.ImageStore(tmp_path).put(png)
    assert isinstance(image, _core.StoredImage)
    assert image.json_string() == json.dumps(base64.b64encode(png).decode()).encode()
    Path(image.path).write_bytes(png[:-1])
    with pytest.raises(ReadError) as error:
        image.json_string()
    assert str(error.value) == (
        f"could not read the stored image {image.path}: the source holds fewer bytes than expected"
    )


def test_a_store_makes_its_folder_with_its_first_image(tmp_path: Path) -> None:
    store = _core.ImageStore(tmp_path / "spool" / "3")
    assert store.put(b"not an image") == b"not an image"
    assert not (tmp_path / "spool").exists() and not store.made
    image = store.put(image_of("x", 0))
    assert isinstance(image, _core.StoredImage) and store.made
    assert [path.name for path in (tmp_path / "spool" / "3").iterdir()] == [Path(image.path).name]


def test_the_placeholder_stores_only_its_images_of_64_kib_or_more(tmp_path: Path) -> None:
    model = PlaceholderImageGeneration()
    with StoringAnswers(_core.ImageStore(tmp_path)):
        [[small]] = model.generate(["a"], size="256x256")
        [[large]] = model.generate(["a"], size="2048x2048")
    [image] = small["images"]
    assert isinstance(image, bytes) and len(image) < 64 * 1024
    [stored] = large["images"]
    assert isinstance(stored, _core.StoredImage) and stored.size >= 64 * 1024
    assert [path.name for path in tmp_path.iterdir()] == [Path(stored.path).name]
