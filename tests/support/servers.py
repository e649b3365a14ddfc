"""Loopback HTTP servers speaking the OpenAI Images (generations and multipart edits) and
Hugging Face text-to-image and image-to-image wire formats, with injectable faults, for
the real client libraries to talk to."""

from __future__ import annotations

import base64
import email.parser
import email.policy
import io
import itertools
import json
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image

from imagetask import _core

OPENAI_PARAMS = {
    "prompt": str,
    "model": str,
    "n": int,
    "size": str,
    "quality": str,
    "style": str,
    "response_format": str,
    "output_format": str,
    "background": str,
    "moderation": str,
    "seed": int,
    "user": str,
}

OPENAI_EDIT_FIELDS = {
    "prompt",
    "model",
    "n",
    "size",
    "quality",
    "response_format",
    "user",
    "background",
    "output_format",
    "input_fidelity",
    "seed",
}
"""The text fields of a multipart edit (all strings on the wire)."""
OPENAI_EDIT_IMAGE_TYPES = {"image/png", "image/jpeg", "image/webp"}
MAX_EDIT_IMAGES = 16
S = TypeVar("S", bound=ThreadingHTTPServer)


@dataclass(frozen=True)
class Upload:
    """A file part of a multipart body."""

    filename: str | None
    content_type: str
    data: bytes


@dataclass
class Fault:
    """One injected answer: an HTTP status (with headers), or a delay before answering, or
    no answer until `hold` is set."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    hold: threading.Event | None = None


@dataclass
class Served:
    """What the server did: every request's body, the images it answered with, timings."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    images: list[bytes] = field(default_factory=list)
    times: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: list[int] = field(default_factory=list)
    auth: list[str | None] = field(default_factory=list)
    in_flight: int = 0
    peak: int = 0


class ImageServer(ThreadingHTTPServer):
    """Serves `POST /v1/images/generations`, `POST /v1/images/edits` (multipart, recorded
    as a dict of its text fields and `Upload`s: `image`, a list under `image[]`, `mask`),
    `GET /files/<name>` and `POST /hf` (text-to-image, or image-to-image when its
    parameters hold a prompt; recorded as sent, the base64 image as it came).

    `faults[prompt]` is a list of `Fault`s consumed one per request for that prompt;
    `always_fail` prompts get a 500 on every request; `latency` delays every answer.
    With `models` set, another model is a 404 `model_not_found` as OpenAI answers it;
    with `forbidden_files`, every download is a 403. `answer_fields` and `image_fields`
    replace fields of an OpenAI answer and of each of its images (a compatible server's
    own shapes); `left_out` names fields left out of an OpenAI answer and of its images.
    Each image is a distinct PNG (the serial number of the image is in its prompt); with
    `repeatable`, one that depends only on its prompt and its place in the answer.
    With `request_window = (limit, seconds)` it limits generation requests as OpenAI
    does: `limit` per window of `seconds`, each answer saying what is left
    (`x-ratelimit-remaining-requests`, `x-ratelimit-reset-requests`), a request past the
    limit a 429 without `Retry-After`.
    """

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, key: str | None = None, latency: float = 0.0) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.key = key
        self.latency = latency
        self.faults: dict[str, list[Fault]] = {}
        self.always_fail: set[str] = set()
        self.empty_images = False
        self.echo_key = False
        self.models: set[str] | None = None
        self.forbidden_files = False
        self.answer_fields: dict[str, Any] = {}
        self.image_fields: dict[str, Any] = {}
        self.left_out: set[str] = set()
        self.repeatable = False
        self.request_window: tuple[int, float] | None = None
        self.window_start = 0.0
        self.window_used = 0
        self.served = Served()
        self.files: dict[str, bytes] = {}
        self.lock = threading.Lock()
        self.serial = itertools.count()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def window_headers(self) -> tuple[bool, dict[str, str]]:
        """Counts a request against `request_window`: whether it is within the limit,
        and the rate-limit headers of its answer."""
        if self.request_window is None:
            return True, {}
        limit, seconds = self.request_window
        with self.lock:
            now = time.monotonic()
            if now >= self.window_start + seconds:
                self.window_start, self.window_used = now, 0
            within = self.window_used < limit
            self.window_used += within
            left = limit - self.window_used
            reset_ms = max(int((self.window_start + seconds - now) * 1000), 1)
        return within, {
            "x-ratelimit-limit-requests": str(limit),
            "x-ratelimit-remaining-requests": str(left),
            "x-ratelimit-reset-requests": f"{reset_ms}ms",
        }

    def image(self, prompt: str, size: str = "8x8", place: int = 0) -> bytes:
        width, height = (int(side) for side in size.split("x"))
        with self.lock:
            serial = next(self.serial)
        [[image]] = _core.placeholder_images(
            [f"{prompt}#{place if self.repeatable else serial}"],
            num_generations=1,
            seed=0,
            width=width,
            height=height,
        )
        with self.lock:
            self.served.images.append(image)
        return image

    def fault(self, prompt: str) -> Fault | None:
        with self.lock:
            if prompt in self.always_fail:
                return Fault(status=500)
            queue = self.faults.get(prompt)
            return queue.pop(0) if queue else None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ImageServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without this, Nagle's algorithm and
        # the client's delayed ACK add ~40 ms to every answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read `server.served` instead."""

    def send(
        self, status: int, body: bytes, kind: str, headers: dict[str, str] | None = None
    ) -> None:
        with self.server.lock:
            self.server.served.statuses.append(status)
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def error(
        self,
        status: int,
        message: str,
        headers: dict[str, str] | None = None,
        code: str | None = None,
    ) -> None:
        if self.server.echo_key:  # some servers quote the credentials they were sent
            message += f" (Authorization: {self.headers.get('Authorization')})"
        error = {"message": message, "type": "invalid_request_error"}
        if code is not None:
            error["code"] = code
        self.send(status, json.dumps({"error": error}).encode(), "application/json", headers)

    def body(self) -> Any:
        length = int(self.headers.get("Content-Length", "0"))
        return json.loads(self.rfile.read(length) or b"null")

    def form(self) -> dict[str, Any] | None:
        """A multipart/form-data body as its fields (text) and files (`Upload`s; several
        of the same name, such as `image[]`, in a list), parsed by the standard library's
        MIME parser; `None` when it is not multipart."""
        kind = self.headers.get("Content-Type", "")
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if not kind.startswith("multipart/form-data"):
            return None
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {kind}\r\n\r\n".encode() + raw
        )
        form: dict[str, Any] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            if part.get_filename() is None:
                form[name] = payload.decode()
            elif name.endswith("[]"):
                form.setdefault(name, []).append(
                    Upload(part.get_filename(), part.get_content_type(), payload)
                )
            else:
                form[name] = Upload(part.get_filename(), part.get_content_type(), payload)
        return form

    def do_GET(self) -> None:
        name = self.path.removeprefix("/files/")
        data = self.server.files.get(name)
        if self.server.forbidden_files:
            self.error(403, "AuthenticationFailed: the signature has expired")
        elif data is None:
            self.error(404, f"no file {name}")
        else:
            self.send(200, data, "image/png")

    def do_POST(self) -> None:
        server = self.server
        with server.lock:
            server.served.in_flight += 1
            server.served.peak = max(server.served.peak, server.served.in_flight)
            server.served.auth.append(self.headers.get("Authorization"))
        try:
            if self.path == "/v1/images/edits":
                form = self.form()
                with server.lock:
                    server.served.requests.append(form)
                self.openai_edit(form)
                return
            body = self.body()
            with server.lock:
                server.served.requests.append(body)
            if self.path == "/v1/images/generations":
                self.openai(body)
            elif self.path == "/hf":
                self.hf(body)
            else:
                self.error(404, f"no route {self.path}")
        finally:
            with server.lock:
                server.served.in_flight -= 1

    def injected(self, prompt: str) -> bool:
        """Applies latency and the next fault for `prompt`; True when it answered."""
        server = self.server
        with server.lock:
            server.served.times[prompt].append(time.monotonic())
        fault = server.fault(prompt)
        if fault is not None and fault.hold is not None:
            fault.hold.wait()
        time.sleep(server.latency + (fault.delay if fault else 0.0))
        if fault and fault.status:
            self.error(fault.status, f"injected {fault.status}", fault.headers)
            return True
        return False

    def openai(self, body: Any) -> None:
        server = self.server
        if server.key is not None and self.headers.get("Authorization") != f"Bearer {server.key}":
            self.error(401, "Incorrect API key provided")
            return
        if not isinstance(body, dict):
            self.error(400, "the body must be a JSON object")
            return
        for name, value in body.items():
            kind = OPENAI_PARAMS.get(name)
            if kind is None:
                self.error(400, f"Unknown parameter: '{name}'.")
                return
            if not isinstance(value, kind):
                self.error(400, f"Invalid type for '{name}': got {json.dumps(value)}")
                return
        if "prompt" not in body or "model" not in body:
            self.error(400, "Missing required parameter: 'prompt' and 'model'.")
            return
        if server.models is not None and body["model"] not in server.models:
            missing = f"The model `{body['model']}` does not exist or you do not have access to it."
            self.error(404, missing, code="model_not_found")
            return
        n = body.get("n", 1)
        if not 1 <= n <= 10:
            self.error(400, f"Invalid 'n': {n}, must be between 1 and 10")
            return
        if body["model"] == "dall-e-3" and n != 1:
            self.error(400, "dall-e-3 only supports n=1")
            return
        prompt = body["prompt"]
        if self.injected(prompt):
            return
        within, limit_headers = server.window_headers()
        if not within:
            self.error(429, "Rate limit reached for requests", limit_headers)
            return
        data = []
        for place in range(n):
            image = server.image(prompt, body.get("size", "8x8"), place)
            item: dict[str, Any] = {"revised_prompt": f"revised: {prompt}"}
            if body.get("response_format") == "url":
                with server.lock:
                    name = f"{next(server.serial)}.png"
                    server.files[name] = image
                item["url"] = f"{server.url}/files/{name}"
            else:
                item["b64_json"] = "" if server.empty_images else base64.b64encode(image).decode()
            data.append(self.without_left_out({**item, **server.image_fields}))
        words = len(prompt.split())
        usage = {"input_tokens": words, "output_tokens": 100 * n, "total_tokens": words + 100 * n}
        answer = {"created": int(time.time()), "data": data, "usage": usage, **server.answer_fields}
        answer_bytes = json.dumps(self.without_left_out(answer)).encode()
        self.send(200, answer_bytes, "application/json", limit_headers)

    def without_left_out(self, fields: dict[str, Any]) -> dict[str, Any]:
        """`fields` but those the server leaves out."""
        return {name: value for name, value in fields.items() if name not in self.server.left_out}

    def openai_edit(self, form: dict[str, Any] | None) -> None:
        """An edit as OpenAI documents it: `image` or up to 16 `image[]` files (PNG, JPEG
        or WebP), an optional PNG `mask` of the first image's size, `prompt`, and the other
        parameters as text fields."""
        server = self.server
        if server.key is not None and self.headers.get("Authorization") != f"Bearer {server.key}":
            self.error(401, "Incorrect API key provided")
            return
        if form is None:
            self.error(400, "the body must be multipart/form-data")
            return
        images = [form["image"]] if "image" in form else form.get("image[]", [])
        unknown = sorted(set(form) - OPENAI_EDIT_FIELDS - {"image", "image[]", "mask"})
        if unknown:
            self.error(400, f"Unknown parameter: '{unknown[0]}'.")
            return
        if ("image" in form and "image[]" in form) or not images or "prompt" not in form:
            self.error(400, "Missing required parameter: 'image' (or 'image[]') and 'prompt'.")
            return
        if len(images) > MAX_EDIT_IMAGES or not all(isinstance(i, Upload) for i in images):
            self.error(400, f"Invalid 'image': at most {MAX_EDIT_IMAGES} image files")
            return
        if any(image.content_type not in OPENAI_EDIT_IMAGE_TYPES for image in images):
            self.error(400, "Invalid file 'image': unsupported mimetype")
            return
        mask = form.get("mask")
        if mask is not None:
            sizes = [Image.open(io.BytesIO(upload.data)) for upload in (images[0], mask)]
            if mask.content_type != "image/png" or sizes[1].format != "PNG":
                self.error(400, "Invalid 'mask': must be a PNG file")
                return
            if sizes[0].size != sizes[1].size:
                self.error(400, "Invalid mask image format - mask size does not match image size")
                return
        if server.models is not None and form.get("model") not in server.models:
            missing = (
                f"The model `{form.get('model')}` does not exist or you do not have access to it."
            )
            self.error(404, missing, code="model_not_found")
            return
        n = form.get("n", "1")
        if not n.isdigit() or not 1 <= int(n) <= 10:
            self.error(400, f"Invalid 'n': {n}, must be between 1 and 10")
            return
        prompt = form["prompt"]
        if self.injected(prompt):
            return
        data = []
        for _ in range(int(n)):
            image = server.image(prompt, form.get("size", "8x8"))
            data.append({"b64_json": base64.b64encode(image).decode(), **server.image_fields})
        usage = {"input_tokens": 1, "output_tokens": 100 * int(n), "total_tokens": 1 + 100 * int(n)}
        answer = {"created": int(time.time()), "data": data, "usage": usage, **server.answer_fields}
        self.send(200, json.dumps(answer).encode(), "application/json")

    def hf(self, body: Any) -> None:
        if not isinstance(body, dict) or not isinstance(body.get("inputs"), str):
            self.error(400, "expected {'inputs': <prompt>, 'parameters': {...}}")
            return
        parameters = body.get("parameters", {})
        if not isinstance(parameters.get("seed"), int):
            self.error(422, "parameters.seed must be an integer")
            return
        prompt = parameters.get("prompt", body["inputs"])
        if "prompt" in parameters:  # image-to-image: `inputs` is the base64 source image
            try:
                Image.open(io.BytesIO(base64.b64decode(body["inputs"], validate=True)))
            except (ValueError, OSError):
                self.error(400, "inputs: expected a base64 image")
                return
        if self.injected(prompt):
            return
        width, height = parameters.get("width", 8), parameters.get("height", 8)
        self.send(200, self.server.image(prompt, f"{width}x{height}"), "image/png")


def openai_command(source: str | Path, out: Path, server: ImageServer, *extra: str) -> list[str]:
    """The arguments of `imagetask generate` of `source` into `out` with OpenAI's model on
    `server`."""
    return [
        "generate",
        str(source),
        "-o",
        str(out),
        "--quiet",
        "--model",
        "openai:gpt-image-1",
        "--base-url",
        f"{server.url}/v1",
        *extra,
    ]


@contextmanager
def serving(server: S) -> Iterator[S]:
    """`server` serving on a thread of its own until the block ends, then closed."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextmanager
def image_server(key: str | None = None, latency: float = 0.0) -> Iterator[ImageServer]:
    """A running `ImageServer` on a free loopback port."""
    with serving(ImageServer(key=key, latency=latency)) as server:
        yield server


def wait_until(condition: Callable[[], bool]) -> None:
    """Returns once `condition()` holds (fails the test after 20 s)."""
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.005)
