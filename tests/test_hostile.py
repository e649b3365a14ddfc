"""Hostile input to the task and its row builder: each test names the defect it guards."""

from __future__ import annotations

import base64
import gc
import json
import pickle
import shutil
import threading
import traceback
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import msgspec
import pytest
from conftest import BatchScriptedModel, EchoModel, b64
from servers import Fault, ImageServer, image_server

from imagetask import (
    ConfigError,
    ImageGeneration,
    InputRowError,
    MissingExtraError,
    ReadError,
    RequestError,
    RunError,
    RunInterrupted,
    RunStopped,
    RunSummary,
    SinkError,
    _core,
    errors,
)
from imagetask.errors import BudgetReached, ImageTaskError, RequestRefused, UsageError
from imagetask.models import OpenAIImageGeneration, PlaceholderImageGeneration

META = "distilabel_metadata"
ERROR = "error_image_generation_0"
RAW = "raw_output_image_generation_0"
PNG = b"\x89PNG\r\n\x1a\n-image"


def task_for(answers: Any, **fields: Any) -> ImageGeneration:
    return ImageGeneration(image_generation_model=BatchScriptedModel(answers), **fields)


# --- counts: bounded, never pre-allocated from an unchecked number ---------------------


@pytest.mark.parametrize("count", [10**12, 2**63, 2**64, 10_001])
def test_a_huge_num_generations_is_a_config_error(count: int) -> None:
    with pytest.raises(ConfigError) as info:
        ImageGeneration(image_generation_model=EchoModel(), num_generations=count)
    assert str(info.value) == (
        f"ImageGeneration: bad field `num_generations` = {count}: Expected `int` <= 10000"
    )


def test_a_huge_num_generations_at_run_time_is_a_config_error() -> None:
    task = ImageGeneration(image_generation_model=EchoModel())
    with pytest.raises(ConfigError, match="`num_generations` = 1000000000000"):
        task.set_runtime_parameters({"num_generations": 10**12})
    assert task.num_generations == 1


@pytest.mark.parametrize("count", [0, 10**12, 2**63])
def test_the_native_builder_refuses_an_unbounded_count(count: int) -> None:
    with pytest.raises(ValueError, match="num_generations must be between 1 and 10000"):
        _core.RowBuilder(
            task_name="t",
            model_name="m",
            inputs=[("prompt", "prompt")],
            outputs=[("image", "image")],
            num_generations=count,
            group_generations=False,
            add_raw_output=True,
            add_raw_input=True,
            image_bytes=False,
            inline_raw_images=False,
            pass_invalid_rows=False,
            model_name_column="model_name",
            metadata_column=META,
        )


def test_the_largest_count_builds_every_row() -> None:
    n = _core.MAX_GENERATIONS
    answer = [[{"images": [b64(f"{k}".encode()) for k in range(n)]}]]
    rows = task_for(answer, num_generations=n, add_raw_output=False).process_batch(
        [{"prompt": "p"}]
    )
    assert len(rows) == n
    assert [base64.b64decode(row["image"]) for row in rows[:3]] == [b"0", b"1", b"2"]


# --- only Exception is a failed row --------------------------------------------------


class Interrupting(ImageGeneration):
    """Raises `what` from `format_input` (or `format_output`) for the prompt "stop"."""

    def format_input(self, input: dict[str, Any]) -> str:
        if input["prompt"] == "stop" and self.name == "in_0":
            raise STOP[0]
        return str(input["prompt"])

    def format_output(self, output: dict[str, Any], input: dict[str, Any] | None = None) -> Any:
        if input is not None and input["prompt"] == "stop" and self.name == "out_0":
            raise STOP[0]
        return {"image": output["images"][0]}


STOP: list[BaseException] = []


@pytest.mark.parametrize("stop", [KeyboardInterrupt(), SystemExit(3), MemoryError()])
@pytest.mark.parametrize("hook", ["in_0", "out_0"])
def test_interrupts_in_a_hook_propagate_instead_of_failing_a_row(
    stop: BaseException, hook: str
) -> None:
    STOP[:] = [stop]
    answers = [[{"images": [b64(b"a")]}], [{"images": [b64(b"b")]}]]
    task = Interrupting(image_generation_model=BatchScriptedModel(answers), name=hook)
    with pytest.raises(type(stop)):
        task.process_batch([{"prompt": "go"}, {"prompt": "stop"}])


def test_an_exception_in_a_hook_fails_only_its_row() -> None:
    STOP[:] = [ValueError("bad row")]
    answers = [[{"images": [b64(b"a")]}], [{"images": [b64(b"b")]}]]
    task = Interrupting(image_generation_model=BatchScriptedModel(answers), name="out_0")
    rows = task.process_batch([{"prompt": "go"}, {"prompt": "stop"}])
    assert [row["image"] for row in rows] == [b64(b"a"), None]
    assert rows[1][META]["error_out_0"] == "ValueError: bad row"


@pytest.mark.parametrize("stop", [KeyboardInterrupt(), SystemExit(2), MemoryError()])
def test_a_model_that_is_interrupted_stops_the_batch(stop: BaseException) -> None:
    with pytest.raises(type(stop)):
        task_for(stop).process_batch([{"prompt": "p"}])
    with pytest.raises(type(stop)):
        task_for([stop]).process_batch([{"prompt": "p"}])


def test_a_cancelled_request_stops_the_batch_instead_of_failing_its_row() -> None:
    import asyncio

    with pytest.raises(asyncio.CancelledError):
        task_for([[{"images": [b64(b"a")]}], asyncio.CancelledError()]).process_batch(
            [{"prompt": "a"}, {"prompt": "b"}]
        )


def write_with(
    rows: list[dict[str, Any]], folder: Path, convert: Any
) -> list[tuple[int, int, str]]:
    """`_core.write_artifacts` of image rows into `folder`, converting with `convert`."""
    return _core.write_artifacts(
        rows,
        image_column="image",
        path_column="image_path",
        metadata_column=META,
        error_key=ERROR,
        folder=folder,
        prefix="images",
        convert=convert,
    )


def test_an_interrupted_converter_propagates(tmp_path: Path) -> None:
    rows = [{"image": b64(PNG), "image_path": None, META: {}}]

    def convert(data: bytes) -> bytes:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_with(rows, tmp_path, convert)


# --- rows are read once; what the caller changes later does not reach the output ------


class Hostile(Mapping[str, Any]):
    """A Mapping whose methods raise or count their calls."""

    def __init__(self, data: dict[str, Any], fail: str | None = None) -> None:
        self.data = data
        self.fail = fail
        self.reads = 0

    def __getitem__(self, key: str) -> Any:
        self.reads += 1
        if self.fail == "getitem":
            raise RuntimeError("getitem exploded")
        return self.data[key]

    def __iter__(self) -> Iterator[str]:
        if self.fail == "iter":
            raise RuntimeError("iter exploded")
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def keys(self) -> Any:
        if self.fail == "keys":
            raise RuntimeError("keys exploded")
        return self.data.keys()


@pytest.mark.parametrize("fail", ["getitem", "keys"])
def test_a_raising_mapping_is_an_input_row_error_naming_the_row(fail: str) -> None:
    rows: list[Any] = [{"prompt": "a"}, Hostile({"prompt": "b"}, fail=fail)]
    with pytest.raises(InputRowError) as info:
        task_for([]).process_batch(rows)
    assert info.value.row == 1
    assert str(info.value) == (
        f"row 1 of the batch cannot be read as a mapping: RuntimeError: {fail} exploded"
    )


def test_a_raising_mapping_is_a_failure_row_when_invalid_rows_pass() -> None:
    rows: list[Any] = [{"prompt": "a"}, Hostile({"prompt": "b"}, fail="keys")]
    task = task_for([[{"images": [b64(b"a")]}]], on_invalid_row="fail")
    out = task.process_batch(rows)
    assert [row.get("prompt") for row in out] == ["a", None]
    assert out[1][META][ERROR] == (
        "row 1 of the batch cannot be read as a mapping: RuntimeError: keys exploded"
    )
    assert out[1]["image"] is None


def test_a_mapping_is_read_once() -> None:
    row = Hostile({"prompt": "p", "extra": 1})
    rows = task_for([[{"images": [b64(b"a")]}]], num_generations=1).process_batch([row])
    assert row.reads == 2  # one __getitem__ per key, once
    assert rows[0]["prompt"] == "p" and rows[0]["extra"] == 1


def test_rows_changed_while_the_model_runs_do_not_change_the_output() -> None:
    rows: list[dict[str, Any]] = [{"prompt": "a", "keep": 1}, {"prompt": "b", "keep": 2}]

    def answer(prompts: list[str], n: int) -> Any:
        rows.clear()
        rows.append({"other": True})
        return [[{"images": [b64(p.encode())]}] for p in prompts]

    out = task_for(answer).process_batch(rows)
    assert [(row["prompt"], row["keep"]) for row in out] == [("a", 1), ("b", 2)]


def test_a_row_dict_changed_while_the_model_runs_does_not_change_the_output() -> None:
    row = {"prompt": "a", "keep": 1}

    def answer(prompts: list[str], n: int) -> Any:
        row.clear()
        return [[{"images": [b64(b"x")]}]]

    [out] = task_for(answer).process_batch([row])
    assert (out["prompt"], out["keep"]) == ("a", 1)


def test_a_converter_that_changes_the_rows_cannot_crash_the_writer(tmp_path: Path) -> None:
    rows = [{"image": b64(PNG), "image_path": None, META: {}} for _ in range(3)]
    original = list(rows)

    def convert(data: bytes) -> bytes:
        rows.clear()
        return data

    failures = write_with(rows, tmp_path, convert)
    assert failures == []
    assert {row["image_path"] for row in original} == {f"images/{_sha(PNG)}.png"}


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


# --- every image is checked the same way whatever the flags ---------------------------

BAD_IMAGES = [
    ("not base64!", "image 0 of the model's answer is not valid base64"),
    ("data:image/png;base64,iVBORw0KGgo=", "image 0 of the model's answer is not valid base64"),
    ("", "image 0 of the model's answer is empty"),
    (b"", "image 0 of the model's answer is empty"),
    ("\ud800abc", "image 0 of the model's answer is not valid base64 (it is not ASCII text)"),
]


@pytest.mark.parametrize(("image", "error"), BAD_IMAGES)
@pytest.mark.parametrize("raw", [True, False])
@pytest.mark.parametrize("inline", [True, False])
@pytest.mark.parametrize("as_bytes", [True, False])
def test_a_bad_image_fails_its_row_whatever_the_flags(
    image: Any, error: str, raw: bool, inline: bool, as_bytes: bool
) -> None:
    task = task_for(
        [[{"images": [image]}]],
        add_raw_output=raw,
        inline_raw_images=inline,
        images_as_bytes=as_bytes,
    )
    [row] = task.process_batch([{"prompt": "p"}])
    assert row["image"] is None
    assert row[META][ERROR].startswith(error)
    # Any sink can write the row, a lone surrogate included.
    line = msgspec.json.encode(row)
    assert json.loads(line)["prompt"] == "p"


def test_an_empty_openai_b64_json_is_a_failure_row() -> None:
    with image_server() as server:
        server.empty_images = True
        backend = OpenAIImageGeneration(
            model="gpt-image-1", base_url=f"{server.url}/v1", api_key="k", retry_backoff=0.001
        )
        [row] = ImageGeneration(image_generation_model=backend).process_batch([{"prompt": "p"}])
        backend.unload()
    assert row["image"] is None
    assert row[META][ERROR] == "image 0 of the model's answer is empty"


# --- the garbage collector is left as it was found -------------------------------------


def test_a_build_leaves_a_disabled_collector_disabled() -> None:
    task = task_for([[{"images": [b64(b"a")]}]])
    gc.disable()
    try:
        task.process_batch([{"prompt": "p"}])
        assert not gc.isenabled()
    finally:
        gc.enable()
    task = task_for([[{"images": [b64(b"a")]}]])
    task.process_batch([{"prompt": "p"}])
    assert gc.isenabled()


def test_nested_builds_in_threads_leave_the_collector_on() -> None:
    started, release = threading.Event(), threading.Event()

    def slow_answer(prompts: list[str], n: int) -> Any:
        return [[{"images": [b64(b"a")]}] for _ in prompts]

    class Waiting(ImageGeneration):
        def format_output(self, output: dict[str, Any], input: Any = None) -> Any:
            started.set()
            release.wait(10)
            return {"image": output["images"][0]}

    waiting = Waiting(image_generation_model=BatchScriptedModel(slow_answer))
    thread = threading.Thread(target=waiting.process_batch, args=([{"prompt": "a"}],))
    thread.start()
    assert started.wait(10)
    task_for(slow_answer).process_batch([{"prompt": "b"}])  # a second build ends first
    release.set()
    thread.join(10)
    assert gc.isenabled()


@pytest.mark.parametrize("enabled", [True, False])
def test_a_collector_switched_by_another_thread_during_builds_stays_switched(
    enabled: bool,
) -> None:
    seen: list[bool] = []

    def switch() -> None:
        (gc.disable if enabled else gc.enable)()

    class Switching(ImageGeneration):
        def format_output(self, output: dict[str, Any], input: Any = None) -> Any:
            seen.append(gc.isenabled())
            other = threading.Thread(target=switch)
            other.start()
            other.join(10)
            return {"image": output["images"][0]}

    task = Switching(image_generation_model=BatchScriptedModel([[{"images": [b64(b"a")]}]]))
    after = []
    try:
        for _ in range(5):
            (gc.enable if enabled else gc.disable)()
            [row] = task.process_batch([{"prompt": "p"}])
            after.append(gc.isenabled())
            assert row["image"] == b64(b"a")
    finally:
        gc.enable()
    assert after == [not enabled] * 5
    assert seen == [enabled] * 5


@pytest.mark.parametrize("group", [False, True])
def test_the_containers_of_built_rows_are_left_out_of_the_collector(group: bool) -> None:
    answers = [[{"images": [b64(b"a")]}], [{"images": [7]}]]  # an image, a failure
    task = task_for(answers, add_raw_output=True, group_generations=group)
    rows = task.process_batch([{"prompt": p, META: {"upstream": 1}} for p in "ab"])
    metas = [meta for row in rows for meta in (row[META] if group else [row[META]])]
    built = [*rows, *metas, *(m[RAW] for m in metas), *(m[RAW]["images"] for m in metas)]
    if group:
        built += [c for row in rows for c in (row["image"], row[META])]
    assert [type(c).__name__ for c in built if gc.is_tracked(c)] == []
    assert [(m["upstream"], ERROR in m) for m in metas] == [(1, False), (1, True)]


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


# --- names and columns ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"output_mappings": {"image": "distilabel_metadata"}},
            "ImageGeneration: `metadata_column` and output `image` are both named "
            "'distilabel_metadata'",
        ),
        (
            {"output_mappings": {"model_name": "image"}},
            "ImageGeneration: output `model_name` and output `image` are both named 'image'",
        ),
        (
            {"metadata_column": "image"},
            "ImageGeneration: `metadata_column` and output `image` are both named 'image'",
        ),
        (
            {"output_mappings": {"image": "prompt"}},
            "ImageGeneration: output `image` and input `prompt` are both named 'prompt'",
        ),
        (
            {"output_mappings": {"image_path": "image"}},
            "ImageGeneration: output `image_path` and output `image` are both named 'image'",
        ),
    ],
)
def test_colliding_output_names_are_a_config_error(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        ImageGeneration(image_generation_model=EchoModel(), **fields)
    assert str(info.value) == (
        message + ": give them distinct names (output_mappings, metadata_column)"
    )


@pytest.mark.parametrize("name", ["x\n", "a" * 101, "", "é", "a/b", "..", "a b"])
def test_bad_names_are_refused_at_construction(name: str) -> None:
    with pytest.raises(ConfigError, match="bad field `name`"):
        ImageGeneration(image_generation_model=EchoModel(), name=name or " ")


def test_a_long_name_is_not_echoed_whole() -> None:
    with pytest.raises(ConfigError) as info:
        ImageGeneration(image_generation_model=EchoModel(), name="n" * 5000)
    assert len(str(info.value)) < 300


# --- secrets --------------------------------------------------------------------------

SECRET = "sk-live-0123456789abcdef"


def test_an_unknown_field_never_shows_its_value() -> None:
    with pytest.raises(ConfigError) as info:
        ImageGeneration(image_generation_model=EchoModel(), api_key=SECRET)
    assert str(info.value) == (
        "ImageGeneration: bad field `api_key`: Object contains unknown field `api_key`"
    )
    assert SECRET not in repr(info.value)


def _all_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc.__context__)


@pytest.fixture
def keyed_server() -> Iterator[ImageServer]:
    with image_server(key=SECRET) as running:
        yield running


def test_a_request_error_chains_nothing_that_holds_the_key(keyed_server: ImageServer) -> None:
    keyed_server.always_fail = {"p"}
    keyed_server.echo_key = True
    backend = OpenAIImageGeneration(
        model="gpt-image-1",
        base_url=f"{keyed_server.url}/v1",
        api_key=SECRET,
        max_retries=0,
        retry_backoff=0.001,
    )
    with pytest.raises(RequestError) as caught:
        backend.generate(["p"], 1)
    backend.unload()
    error = caught.value
    assert error.__context__ is None and error.__cause__ is None
    assert SECRET not in _all_text(error)
    assert "Authorization: Bearer **********" in str(error)


def test_an_unparsable_retry_after_is_retried_and_masked(keyed_server: ImageServer) -> None:
    keyed_server.faults = {"p": [Fault(status=429, headers={"Retry-After": "soon, maybe"})]}
    backend = OpenAIImageGeneration(
        model="gpt-image-1", base_url=f"{keyed_server.url}/v1", api_key=SECRET, retry_backoff=0.001
    )
    [row] = ImageGeneration(image_generation_model=backend).process_batch([{"prompt": "p"}])
    backend.unload()
    assert row["image"] is not None
    assert keyed_server.served.statuses == [429, 200]


# --- dumps are data -------------------------------------------------------------------


class PlainModel:
    """A backend that is a plain object: the four members, nothing else."""

    model_name = "plain"

    def load(self) -> None:
        pass

    def unload(self) -> None:
        pass

    def generate(self, inputs: list[str], num_generations: int = 1, **kwargs: Any) -> Any:
        return [[{"images": [b64(PNG)] * num_generations}] for _ in inputs]


def test_a_run_takes_a_plain_object_backend(tmp_path: Path) -> None:
    task = ImageGeneration(image_generation_model=PlainModel(), num_generations=2)
    summary = task.run([{"prompt": "a"}, {"prompt": "b"}], tmp_path / "out")
    assert (summary.rows_in, summary.rows_out, summary.failed) == (2, 4, 0)
    dumped = json.loads((tmp_path / "out" / "run.json").read_text())["task"]
    assert dumped["image_generation_model"] == {
        "type_info": {"module": "test_hostile", "name": "PlainModel"}
    }
    again = ImageGeneration(image_generation_model=PlainModel(), num_generations=2)
    assert again.run([{"prompt": "a"}, {"prompt": "b"}], tmp_path / "out", resume=True).complete


def test_from_dict_loads_a_plain_backend_only_when_allowed() -> None:
    dumped = ImageGeneration(image_generation_model=PlainModel()).dump()
    with pytest.raises(ConfigError, match="pass it in `allow` to load it"):
        ImageGeneration.from_dict(dumped)
    loaded = ImageGeneration.from_dict(dumped, allow=[PlainModel])
    assert isinstance(loaded.image_generation_model, PlainModel)


@pytest.mark.parametrize(
    "type_info",
    [
        {"module": "os", "name": "system"},
        {"module": "subprocess", "name": "Popen"},
        {"module": "builtins", "name": "eval"},
        {"module": "imagetask.config", "name": "importlib.import_module"},
        {"module": 3, "name": None},
        "os.system",
    ],
)
def test_from_dict_never_calls_what_a_dump_names(type_info: Any) -> None:
    dumped = ImageGeneration(image_generation_model=EchoModel()).dump()
    dumped["image_generation_model"] = {"type_info": type_info, "command": "touch /tmp/pwned"}
    with pytest.raises(ConfigError, match="cannot load `type_info`"):
        ImageGeneration.from_dict(dumped)
    dumped["type_info"] = type_info
    with pytest.raises(ConfigError, match="cannot load `type_info`"):
        ImageGeneration.from_dict(dumped)


def test_from_dict_still_loads_imagetask_and_program_classes() -> None:
    task = ImageGeneration(image_generation_model=EchoModel(label="x"), num_generations=3)
    loaded = ImageGeneration.from_dict(json.loads(json.dumps(task.dump())))
    assert isinstance(loaded.image_generation_model, EchoModel)
    assert loaded.dump() == task.dump()


# --- every exception of the library pickles -------------------------------------------

SUMMARY = RunSummary("out", "out/data.jsonl", 3, 6, 1, 1.5, 0, False)


EVERY_ERROR = [
    ImageTaskError("base"),
    ConfigError("config"),
    InputRowError("row 2 of the batch lacks the input column 'prompt'", 2, "prompt"),
    InputRowError("row 0 of the batch is a int, not a mapping", 0),
    ReadError("file.jsonl:3: bad line"),
    SinkError("sink"),
    UsageError("--size: bad"),
    RunError("run"),
    RunStopped("stopped after 50 generations failed in a row"),
    RequestError("request failed after 1 attempt"),
    RequestRefused("the server refused the credentials (401)"),
    BudgetReached("the next request (at most $0.1670) would take the estimated cost past"),
    MissingExtraError("pip install '.[parquet]' in the imagetask source folder"),
    RunInterrupted(SUMMARY),
]


def test_every_exception_class_is_tried() -> None:
    assert {type(error).__name__ for error in EVERY_ERROR} == set(errors.__all__)


@pytest.mark.parametrize("error", EVERY_ERROR)
def test_every_exception_round_trips_through_pickle(error: ImageTaskError) -> None:
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is type(error)
    assert str(again) == str(error)
    assert vars(again) == vars(error)
    if isinstance(error, InputRowError):
        assert (again.row, again.column) == (error.row, error.column)
    if isinstance(error, RunInterrupted):
        assert again.summary == SUMMARY


INTERRUPTING_ASYNC_MODEL = """
import sys
from imagetask import AsyncImageGenerationModel, ImageGeneration
from imagetask.testing import ScriptedModel

PNG = ScriptedModel().generate(["x"], 1)[0][0]["images"][0]


class Stopping(AsyncImageGenerationModel):
    @property
    def model_name(self):
        return "stopping"

    async def agenerate(self, input, num_generations=1, **kwargs):
        if input == "stop":
            raise {kind}
        return [{{"images": [PNG]}}]


task = ImageGeneration(image_generation_model=Stopping())
try:
    task.process_batch([{{"prompt": "go"}}, {{"prompt": "stop"}}])
except {name} as exc:
    print("raised", type(exc).__name__)
print("next batch", len(task.process_batch([{{"prompt": "go"}}])))
task.unload()
"""


@pytest.mark.parametrize(
    ("kind", "name"),
    [("SystemExit(2)", "SystemExit"), ("KeyboardInterrupt()", "KeyboardInterrupt")],
)
def test_an_async_model_that_is_interrupted_does_not_hang_the_caller(kind: str, name: str) -> None:
    import subprocess
    import sys

    script = INTERRUPTING_ASYNC_MODEL.format(kind=kind, name=name)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout == f"raised {name}\nnext batch 1\n", done.stderr


def test_a_retried_failure_does_not_keep_its_old_error() -> None:
    import pyarrow as pa

    old = {"error_image_generation_0": "old failure", "statistics_image_generation_0": "old"}
    task = task_for([[{"images": [b64(PNG)]}]])
    [row] = task.process_batch([{"prompt": "a", META: {**old, "source": "web"}}])
    assert row[META] == {
        "source": "web",
        "raw_output_image_generation_0": {"images": ["sha256:" + _sha(PNG)]},
        "raw_input_image_generation_0": "a",
    }
    task = task_for([[{"images": [b64(PNG)]}]])
    kind = pa.struct([("error_image_generation_0", pa.string()), ("source", pa.string())])
    table = pa.table({"prompt": ["a"], META: pa.array([{**old, "source": "web"}], kind)})
    [meta] = task.process_arrow(table).column(META).to_pylist()
    assert (meta["source"], meta["error_image_generation_0"]) == ("web", None)


def test_invalid_arrow_data_is_an_error_not_a_crash() -> None:
    import numpy as np
    import pyarrow as pa

    task = task_for([])
    offsets = pa.py_buffer(np.array([0, 5, 2], np.int32).tobytes())
    backwards = pa.Array.from_buffers(pa.string(), 2, [None, offsets, pa.py_buffer(b"abcdefgh")])
    with pytest.raises(ValueError, match=r"the Arrow data is not valid: .*Offset invariant"):
        task.process_arrow(pa.table({"prompt": backwards}))
    not_utf8 = pa.array([b"ok", b"bad\xff\xfe"]).view(pa.string())
    with pytest.raises(ValueError, match=r"the Arrow data is not valid: .*Invalid UTF8"):
        task.process_arrow(pa.table({"prompt": not_utf8}))


def test_credentials_in_a_base_url_are_never_shown() -> None:
    from imagetask.models import InferenceEndpointsImageGeneration

    url = "http://user:PASSWORD9@127.0.0.1:9/v1?key=QKEY"
    openai = OpenAIImageGeneration(model="m", api_key="k", base_url=url, max_retries=0)
    task = ImageGeneration(image_generation_model=openai)
    hf = InferenceEndpointsImageGeneration(base_url=url, max_retries=0)
    with pytest.raises(RequestError) as caught:
        openai.generate(["p"], 1)
    openai.unload()
    error = caught.value
    shown = [repr(openai), json.dumps(task.dump()), hf.model_name, repr(hf), str(error)]
    for text in shown:
        assert "PASSWORD9" not in text and "QKEY" not in text, text
    assert hf.model_name == "http://user:**********@127.0.0.1:9/v1?**********"


# --- a run folder that is someone else's: links in it are never written through --------


@pytest.mark.parametrize("format", ["jsonl", "parquet"])
def test_links_at_the_temporary_names_of_a_run_are_not_written_through(
    tmp_path: Path, format: Any
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    out = tmp_path / "out"
    out.mkdir()
    for name in (".checkpoint.json.tmp", ".run.json.tmp", ".README.md.tmp", "run.json"):
        (out / name).symlink_to(victim)
    task = ImageGeneration(image_generation_model=PlaceholderImageGeneration(size="4x4"))
    summary = task.run([{"prompt": f"p{i}"} for i in range(3)], out, format=format)
    assert (summary.rows_out, summary.complete) == (3, True)
    assert victim.read_text() == "keep me\n"
    assert json.loads((out / "run.json").read_text())["rows_out"] == 3
    written = ["checkpoint.json", "run.json"] + (["README.md"] if format == "parquet" else [])
    assert not any((out / name).is_symlink() for name in written)
    leftovers = [path.name for path in out.iterdir() if path.name.endswith(".tmp")]
    assert sorted(leftovers) == [".README.md.tmp", ".checkpoint.json.tmp", ".run.json.tmp"]


def test_a_lock_file_that_is_a_link_is_refused_and_left_alone(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / ".imagetask.lock").symlink_to(victim)
    task = ImageGeneration(image_generation_model=PlaceholderImageGeneration(size="4x4"))
    with pytest.raises(RunError) as caught:
        task.run([{"prompt": "p"}], out)
    assert str(caught.value) == (
        f"{out / '.imagetask.lock'} is a link: imagetask writes no file through a link; "
        "remove it and start again"
    )
    assert victim.read_text() == "keep me\n"
    assert sorted(path.name for path in out.iterdir()) == [".imagetask.lock"]


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
