"""A loopback server speaking OpenAI's Files and Batches wire format (multipart upload,
batch objects and their statuses, output and error files), for the real `openai` client.

Jobs advance one status per poll (`validating`, `in_progress`, `finalizing`, then
`completed`, `expired`, `cancelled` or `failed`), so a client polling every few
milliseconds sees a job end at once; the test holds them `in_progress` by clearing
`release` (all of them, or those holding one of `held_prompts`), scripts how the
next jobs end with `plans`, and plants malformed answers with `mangle` and `null_counts`.
While `downloads` is clear, the output file of a job holding one of `held_downloads`
stops halfway through its download.
"""

from __future__ import annotations

import base64
import itertools
import json
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesParser
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support.servers import OPENAI_PARAMS, Handler, ImageServer

ENDPOINT = "/v1/images/generations"
BLOCKED = "[blocked]"
"""A prompt holding this is refused by the moderation (an error line)."""
DROPPED = "[dropped]"
"""A prompt holding this is left out of both files of its job."""


@dataclass
class Plan:
    """How a job ends: `runs` requests are run (all when `None`), then it ends as `ends`."""

    ends: str = "completed"
    runs: int | None = None


@dataclass
class Upload:
    id: str
    filename: str
    purpose: str
    data: bytes


@dataclass
class Job:
    """A batch and what the server did with it."""

    object: dict[str, Any]
    plan: Plan
    lines: list[dict[str, Any]] = field(default_factory=list)


class BatchServer(ImageServer):
    """Serves `POST /v1/files`, `GET /v1/files/<id>/content`, `POST /v1/batches`,
    `GET /v1/batches[/<id>]` and `POST /v1/batches/<id>/cancel`.

    `release` (set) lets the held jobs run (every job, or those with a prompt in
    `held_prompts`); `plans` are consumed one per created job; a model not in
    `batch_models` fails validation; `create_faults` are statuses answered to the next
    creates after the batch is made (an answer lost); while `answer_creates` is clear, a
    create makes its batch and waits before answering. `mangle[prompt]` turns the answer
    line of that prompt's request into what the file holds instead (a malformed line);
    with `null_counts` every poll answers `request_counts` whose fields are null. While
    `downloads` is clear, the download of the output file of a job holding a prompt of
    `held_downloads` sends half the file and waits (`downloads_held` counts them).
    """

    def __init__(self, key: str | None = None) -> None:
        super().__init__(key=key)
        self.RequestHandlerClass = BatchHandler
        self.lock = threading.RLock()  # type: ignore[assignment]
        self.uploads: dict[str, Upload] = {}
        self.jobs: dict[str, Job] = {}
        self.release = threading.Event()
        self.release.set()
        self.answer_creates = threading.Event()
        self.answer_creates.set()
        self.plans: deque[Plan] = deque()
        self.held_prompts: set[str] | None = None
        self.batch_models: set[str] | None = None
        self.create_faults: deque[int] = deque()
        self.mangle: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}
        self.null_counts = False
        self.held_creates = 0
        self.downloads = threading.Event()
        self.downloads.set()
        self.held_downloads: set[str] = set()
        self.downloads_held = 0
        self.outputs: dict[str, Job] = {}
        self.ids = itertools.count(1)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet about clients that went away (a test kills them on purpose)."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def new_id(self, prefix: str) -> str:
        with self.lock:
            return f"{prefix}{next(self.ids):04d}"

    def submitted(self) -> Counter[tuple[str, int]]:
        """How often each (prompt, n) was submitted in a created job."""
        with self.lock:
            jobs = list(self.jobs.values())
        return Counter(
            (line["body"]["prompt"], line["body"].get("n", 1)) for job in jobs for line in job.lines
        )

    def statuses(self) -> Counter[str]:
        with self.lock:
            return Counter(job.object["status"] for job in self.jobs.values())

    def advance(self, job: Job) -> None:
        """One step of a job's life (under the lock)."""
        batch = job.object
        now = int(time.time())
        status = batch["status"]
        if status == "validating":
            errors = self.validate(job)
            if errors:
                batch.update(status="failed", failed_at=now)
                batch["errors"] = {"object": "list", "data": errors}
            else:
                batch.update(status="in_progress", in_progress_at=now)
                batch["request_counts"]["total"] = len(job.lines)
        elif status == "in_progress" and (self.release.is_set() or not self.held(job)):
            self.run(job)
            batch.update(status="finalizing", finalizing_at=now)
        elif status == "finalizing":
            ends = job.plan.ends
            batch.update(status=ends, **{f"{ends}_at": now})
        elif status == "cancelling":
            batch.update(status="cancelled", cancelled_at=now)

    def held(self, job: Job) -> bool:
        held = self.held_prompts
        return held is None or any(line["body"]["prompt"] in held for line in job.lines)

    def validate(self, job: Job) -> list[dict[str, Any]]:
        errors: list[dict[str, Any]] = []
        seen: set[str] = set()
        for number, line in enumerate(job.lines, 1):
            body = line.get("body")
            problem = None
            if line.get("method") != "POST" or line.get("url") != ENDPOINT:
                problem = ("invalid_url", f"the url must be {ENDPOINT} (POST)")
            elif not isinstance(line.get("custom_id"), str) or line["custom_id"] in seen:
                problem = ("duplicate_custom_id", "custom_id must be unique within the file")
            elif not isinstance(body, dict) or not isinstance(body.get("model"), str):
                problem = ("invalid_body", "the body must name a model")
            elif self.batch_models is not None and body["model"] not in self.batch_models:
                problem = (
                    "model_not_found",
                    f"The model '{body['model']}' does not exist or is not supported by the "
                    "Batch API.",
                )
            if problem is not None:
                errors.append({"code": problem[0], "message": problem[1], "line": number})
            seen.add(str(line.get("custom_id")))
        return errors

    def run(self, job: Job) -> None:
        """Answers the job's requests (those its plan runs) into its output and error files."""
        output, failed = [], []
        runs = len(job.lines) if job.plan.runs is None else job.plan.runs
        for index, line in enumerate(job.lines):
            custom_id = line["custom_id"]
            record = {"id": f"batch_req_{index}", "custom_id": custom_id, "error": None}
            if index >= runs:
                if job.plan.ends == "expired":
                    record["response"] = None
                    record["error"] = {
                        "code": "batch_expired",
                        "message": "This request could not be executed before the completion "
                        "window expired.",
                    }
                    failed.append(record)
                continue
            if DROPPED in line["body"]["prompt"]:
                continue
            status, body = self.answer(line["body"])
            record["response"] = {"status_code": status, "request_id": f"req_{index}", "body": body}
            mangle = self.mangle.get(line["body"]["prompt"])
            if mangle is not None:
                record = mangle(record)
            (output if status == 200 else failed).append(record)
        counts = job.object["request_counts"]
        counts.update(completed=len(output), failed=len(failed))
        for name, records in (("output_file_id", output), ("error_file_id", failed)):
            if records:
                upload = Upload(
                    self.new_id("file-out"),
                    f"{job.object['id']}_{name}.jsonl",
                    "batch_output",
                    b"".join(json.dumps(record).encode() + b"\n" for record in records),
                )
                self.uploads[upload.id] = upload
                self.outputs[upload.id] = job
                job.object[name] = upload.id

    def answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """What `POST /v1/images/generations` would answer for one request body."""

        def error(status: int, code: str, message: str) -> tuple[int, dict[str, Any]]:
            detail = {"message": message, "type": "invalid_request_error", "code": code}
            return status, {"error": {**detail, "param": None}}

        for name, value in body.items():
            kind = OPENAI_PARAMS.get(name)
            if kind is None or not isinstance(value, kind):
                return error(400, "unknown_parameter", f"Unknown parameter: '{name}'.")
        prompt, n = body["prompt"], body.get("n", 1)
        if not 1 <= n <= 10:
            return error(400, "invalid_value", f"Invalid 'n': {n}")
        if BLOCKED in prompt:
            return error(
                400,
                "moderation_blocked",
                "Your request was rejected as a result of our safety system.",
            )
        data = []
        for place in range(n):
            image = self.image(prompt, body.get("size", "8x8"), place)
            item: dict[str, Any] = {"revised_prompt": f"revised: {prompt}"}
            if body.get("response_format") == "url":
                name = f"{self.new_id('img')}.png"
                self.files[name] = image
                item["url"] = f"{self.url}/files/{name}"
            else:
                item["b64_json"] = base64.b64encode(image).decode()
            data.append(item)
        words = len(prompt.split())
        usage = {"input_tokens": words, "output_tokens": 100 * n, "total_tokens": words + 100 * n}
        return 200, {"created": int(time.time()), "data": data, "usage": usage}


class BatchHandler(Handler):
    server: BatchServer

    def authorized(self) -> bool:
        key, given = self.server.key, self.headers.get("Authorization", "")
        with self.server.lock:
            self.server.served.auth.append(given)
        if key is not None and given != f"Bearer {key}":
            # Echoes the key it was given, as a careless server might.
            self.error(401, f"Incorrect API key provided: {given.removeprefix('Bearer ')}")
            return False
        return True

    def json(self, status: int, data: Any) -> None:
        self.send(status, json.dumps(data).encode(), "application/json")

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if not url.path.startswith("/v1/"):
            super().do_GET()
            return
        if not self.authorized():
            return
        server = self.server
        parts = url.path.removeprefix("/v1/").split("/")
        if parts[0] == "files" and len(parts) == 3 and parts[2] == "content":
            self.download(parts[1])
            return
        with server.lock:
            if parts == ["batches"]:
                self.json(200, self.page(parse_qs(url.query)))
            elif parts[0] == "batches" and len(parts) == 2 and parts[1] in server.jobs:
                job = server.jobs[parts[1]]
                server.advance(job)
                batch = job.object
                if server.null_counts:
                    counts = dict.fromkeys(batch["request_counts"])
                    batch = {**batch, "request_counts": counts}
                self.json(200, batch)
            else:
                self.error(404, f"no route {url.path}")

    def download(self, file_id: str) -> None:
        """`GET /v1/files/<id>/content`, stopping halfway while a download is held."""
        server = self.server
        with server.lock:
            upload = server.uploads.get(file_id)
            job = server.outputs.get(file_id)
            prompts = {line["body"]["prompt"] for line in job.lines} if job else set()
            hold = not server.downloads.is_set() and bool(prompts & server.held_downloads)
        if upload is None:
            self.error(404, f"No such File object: {file_id}")
        elif not hold:
            self.send(200, upload.data, "application/octet-stream")
        else:
            half = len(upload.data) // 2
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(upload.data)))
            self.end_headers()
            self.wfile.write(upload.data[:half])
            self.wfile.flush()
            with server.lock:
                server.downloads_held += 1
            server.downloads.wait(30)
            self.wfile.write(upload.data[half:])

    def page(self, query: dict[str, list[str]]) -> dict[str, Any]:
        """A page of `GET /v1/batches`, newest first, after the `after` cursor."""
        batches = sorted(
            (job.object for job in self.server.jobs.values()),
            key=lambda batch: batch["id"],
            reverse=True,
        )
        if "after" in query:
            batches = [batch for batch in batches if batch["id"] < query["after"][0]]
        limit = int(query.get("limit", ["20"])[0])
        page = batches[:limit]
        return {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(batches) > limit,
        }

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        if not path.startswith(("/v1/files", "/v1/batches")):
            super().do_POST()
            return
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if not self.authorized():
            return
        if path == "/v1/files":
            self.upload(raw)
        elif path == "/v1/batches":
            self.create(json.loads(raw))
        elif path.startswith("/v1/batches/") and path.endswith("/cancel"):
            self.cancel(path.split("/")[3])
        else:
            self.error(404, f"no route {path}")

    def upload(self, raw: bytes) -> None:
        head = f"Content-Type: {self.headers.get('Content-Type')}\r\n\r\n".encode()
        message = BytesParser(policy=policy.HTTP).parsebytes(head + raw)
        fields: dict[str, Any] = {}
        filename = None
        for part in message.iter_parts():  # type: ignore[attr-defined]
            name = part.get_param("name", header="content-disposition")
            fields[name] = part.get_payload(decode=True)
            filename = part.get_filename() or filename
        purpose = fields.get("purpose", b"").decode()
        if purpose != "batch" or "file" not in fields or not filename:
            self.error(400, "expected a multipart upload with `file` and purpose `batch`")
            return
        upload = Upload(self.server.new_id("file-"), filename, purpose, fields["file"])
        with self.server.lock:
            self.server.uploads[upload.id] = upload
        self.json(
            200,
            {
                "id": upload.id,
                "object": "file",
                "bytes": len(upload.data),
                "created_at": int(time.time()),
                "filename": filename,
                "purpose": "batch",
                "status": "processed",
            },
        )

    def create(self, body: dict[str, Any]) -> None:
        server = self.server
        upload = server.uploads.get(body.get("input_file_id"))
        if upload is None or upload.purpose != "batch":
            self.error(400, f"no batch input file {body.get('input_file_id')!r}")
            return
        if body.get("endpoint") != ENDPOINT or body.get("completion_window") != "24h":
            self.error(400, "endpoint and completion_window must be images and 24h")
            return
        now = int(time.time())
        batch_id = server.new_id("batch_")
        batch: dict[str, Any] = {
            "id": batch_id,
            "object": "batch",
            "endpoint": ENDPOINT,
            "errors": None,
            "input_file_id": upload.id,
            "completion_window": "24h",
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": now,
            "expires_at": now + 86400,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": body.get("metadata"),
        }
        lines = [json.loads(line) for line in upload.data.splitlines() if line.strip()]
        with server.lock:
            plan = server.plans.popleft() if server.plans else Plan()
            server.jobs[batch_id] = Job(batch, plan, lines)
            fault = server.create_faults.popleft() if server.create_faults else None
            held = not server.answer_creates.is_set()
            server.held_creates += held
        if held:
            server.answer_creates.wait(30)
        if fault is not None:
            self.error(fault, f"injected {fault}")
            return
        with server.lock:
            self.json(200, batch)

    def cancel(self, batch_id: str) -> None:
        with self.server.lock:
            job = self.server.jobs.get(batch_id)
            if job is None:
                self.error(404, f"No such batch: {batch_id}")
                return
            job.object.update(status="cancelling", cancelling_at=int(time.time()))
            job.plan = Plan("cancelled", runs=job.plan.runs or 0)
            self.json(200, job.object)


@contextmanager
def batch_server(key: str | None = None) -> Iterator[BatchServer]:
    """A running `BatchServer` on a free loopback port."""
    server = BatchServer(key=key)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.answer_creates.set()
        server.downloads.set()
        server.shutdown()
        server.server_close()
        thread.join()
