"""`imagetask generate` reaches what the Python API can: generation kwargs (`--param`),
the HTTP models' timeout, retries, images per request and key, and `--version`."""

from __future__ import annotations

import importlib.metadata
import json
import sys
from pathlib import Path

import pytest

from imagetask.cli import main
from tests.support.repository import EXAMPLES
from tests.support.servers import Fault, image_server, openai_command

KEY = "sk-cli-secret-0123456789"


def _prompts(tmp_path: Path, *prompts: str) -> str:
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    return str(source)


def _rows(out: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (out / "data.jsonl").read_text().splitlines()]


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0
    assert capsys.readouterr().out == f"imagetask {importlib.metadata.version('imagetask')}\n"


def test_params_are_sent_typed_as_json_toopenai_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    out = tmp_path / "out"
    with image_server(key=KEY) as server:
        status = main(
            openai_command(
                _prompts(tmp_path, "a cat"),
                out,
                server,
                "--size",
                "4x4",
                "--param",
                "quality=high",
                "--param",
                "background=transparent",
                "--param",
                "seed=30",
            )
        )
        requests = server.served.requests
    assert status == 0, capsys.readouterr().err
    assert requests == [
        {
            "model": "gpt-image-1",
            "prompt": "a cat",
            "size": "4x4",
            "quality": "high",
            "background": "transparent",
            "seed": 30,
        }
    ]
    assert [row["prompt"] for row in _rows(out)] == ["a cat"]


def test_params_and_size_reach_hugging_face(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with image_server() as server:
        status = main(
            [
                "generate",
                _prompts(tmp_path, "a dog"),
                "-o",
                str(tmp_path / "out"),
                "--quiet",
                "--model",
                f"hf:{server.url}/hf",
                "--seed",
                "7",
                "--size",
                "4x6",
                "--param",
                "num_inference_steps=30",
                "--param",
                "guidance_scale=3.5",
                "--param",
                "negative_prompt=blurry",
            ]
        )
        requests = server.served.requests
    assert status == 0, capsys.readouterr().err
    assert requests == [
        {
            "inputs": "a dog",
            "parameters": {
                "width": 4,
                "height": 6,
                "num_inference_steps": 30,
                "guidance_scale": 3.5,
                "negative_prompt": "blurry",
                "seed": 7,
            },
        }
    ]


def test_images_per_request_splits_the_generations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    with image_server() as server:
        status = main(
            openai_command(
                _prompts(tmp_path, "a cat"),
                out,
                server,
                "--num-generations",
                "3",
                "--images-per-request",
                "2",
            )
        )
        requests = server.served.requests
    assert status == 0, capsys.readouterr().err
    assert sorted(requests, key=lambda body: -body.get("n", 1)) == [
        {"model": "gpt-image-1", "prompt": "a cat", "n": 2},
        {"model": "gpt-image-1", "prompt": "a cat"},
    ]
    assert len(_rows(out)) == 3


def test_max_retries_and_timeout_reach_the_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    with image_server() as server:
        server.faults["a cat"] = [Fault(status=500), Fault(status=500), Fault(status=500)]
        status = main(
            openai_command(
                _prompts(tmp_path, "a cat"), out, server, "--max-retries", "1", "--timeout", "7.5"
            )
        )
        requests = len(server.served.requests)
    assert status == 1
    assert requests == 2  # the first request and one retry
    model = json.loads((out / "run.json").read_text())["task"]["image_generation_model"]
    assert (model["max_retries"], model["timeout"]) == (1, 7.5)
    assert "all 1 generations failed" in capsys.readouterr().err


def test_api_key_env_sends_that_key_and_never_shows_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-the-wrong-one")
    monkeypatch.setenv("MY_IMAGES_KEY", KEY)
    out = tmp_path / "out"
    with image_server(key=KEY) as server:
        status = main(
            [
                "generate",
                _prompts(tmp_path, "a cat"),
                "-o",
                str(out),
                "--model",
                "openai:gpt-image-1",
                "--base-url",
                f"{server.url}/v1",
                "--api-key-env",
                "MY_IMAGES_KEY",
            ]
        )
        auth = server.served.auth
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert auth == [f"Bearer {KEY}"]
    shown = [captured.out, captured.err]
    shown += [path.read_text() for path in out.rglob("*") if path.is_file()]
    assert not [text for text in shown if KEY in text]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--param", "quality"], "--param: expected KEY=VALUE, got 'quality'"),
        (["--param", "=high"], "--param: expected KEY=VALUE, got '=high'"),
        (
            ["--param", "quality=high", "--param", "quality=low"],
            "--param: 'quality' is given twice",
        ),
        (
            ["--param", "size=8x8", "--size", "4x4"],
            "--param size: --size sets it already; give one of them",
        ),
        (["--timeout", "0"], "--timeout must be a positive number of seconds, got 0.0"),
        (["--timeout", "nan"], "--timeout must be a positive number of seconds, got nan"),
        (["--max-retries", "-1"], "--max-retries must be at least 0, got -1"),
        (["--images-per-request", "0"], "--images-per-request must be at least 1, got 0"),
        (
            ["--api-key-env", "NO_SUCH_VARIABLE_C22"],
            "--api-key-env: the environment variable NO_SUCH_VARIABLE_C22 is not set",
        ),
        (
            ["--api-key-env", "sk-pasted key"],
            "--api-key-env: expected the name of an environment variable",
        ),
    ],
)
def test_bad_http_flags_are_one_line_naming_the_flag(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    message: str,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("NO_SUCH_VARIABLE_C22", raising=False)
    source = _prompts(tmp_path, "a")
    status = main(
        ["generate", source, "-o", str(tmp_path / "o"), "--model", "openai:gpt-image-1", *args]
    )
    assert status == 1
    assert capsys.readouterr().err == f"imagetask: error: {message}\n"


@pytest.mark.parametrize(
    ("model", "args", "message"),
    [
        (
            "placeholder",
            ["--param", "quality=high"],
            "--param quality: the placeholder model takes no generation kwargs (its size and "
            "seed are --size and --seed)",
        ),
        ("placeholder", ["--timeout", "5"], "--timeout: the placeholder model sends no requests"),
        (
            "placeholder",
            ["--max-retries", "2"],
            "--max-retries: the placeholder model sends no requests",
        ),
        (
            "placeholder",
            ["--api-key-env", "HOME"],
            "--api-key-env: the placeholder model sends no requests",
        ),
        (
            "placeholder",
            ["--images-per-request", "2"],
            "--images-per-request: the placeholder model sends no requests",
        ),
        (
            "hf:org/model",
            ["--images-per-request", "2"],
            "--images-per-request is for openai:<model>",
        ),
        (
            "hf:org/model",
            ["--param", "width=8", "--size", "4x4"],
            "--param width: --size sets it already; give one of them",
        ),
    ],
)
def test_flags_a_model_does_not_take_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model: str, args: list[str], message: str
) -> None:
    source = _prompts(tmp_path, "a")
    status = main(["generate", source, "-o", str(tmp_path / "o"), "--model", model, *args])
    assert status == 1
    assert capsys.readouterr().err == f"imagetask: error: {message}\n"


JSONL_PROMPTS = EXAMPLES / "prompts.jsonl"
TEMPLATE = "{prompt}, in {style}"


def test_a_template_builds_each_prompt_from_several_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    command = ["generate", str(JSONL_PROMPTS), "-o", str(out), "--quiet", "--size", "4x4"]
    assert main([*command, "--template", TEMPLATE, "--limit", "2"]) == 0
    assert main([*command, "--template", TEMPLATE, "--resume"]) == 0, capsys.readouterr().err
    sources = [json.loads(line) for line in JSONL_PROMPTS.read_text().splitlines()]
    rows = _rows(out)
    assert [(row["prompt"], row["style"]) for row in rows] == [
        (source["prompt"], source["style"]) for source in sources
    ]
    assert [row["distilabel_metadata"]["raw_input_template_generation_0"] for row in rows] == [
        f"{source['prompt']}, in {source['style']}" for source in sources
    ]
    report = json.loads((out / "run.json").read_text())
    assert (report["rows_in"], report["resumed_from"], report["task"]["template"]) == (
        len(sources),
        2,
        TEMPLATE,
    )


def test_a_template_sends_the_filled_prompt_toopenai_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.csv"
    source.write_text("subject,style\na fox,ink\n")
    with image_server() as server:
        status = main(
            [
                "generate",
                str(source),
                "-o",
                str(tmp_path / "out"),
                "--quiet",
                "--model",
                "openai:gpt-image-1",
                "--base-url",
                f"{server.url}/v1",
                "--template",
                "a photo of {subject} in {style}",
            ]
        )
        requests = server.served.requests
    assert status == 0, capsys.readouterr().err
    assert requests == [{"model": "gpt-image-1", "prompt": "a photo of a fox in ink"}]


def test_resuming_with_another_template_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    command = ["generate", str(JSONL_PROMPTS), "-o", str(out), "--quiet", "--size", "4x4"]
    assert main([*command, "--template", TEMPLATE, "--limit", "1"]) == 0
    assert main([*command, "--template", "{prompt} in {style}", "--resume"]) == 1
    assert capsys.readouterr().err == (
        f"imagetask: error: {out}: the task differs from the run's: `template` was "
        '"{prompt}, in {style}", now "{prompt} in {style}"\n'
    )
    assert len(_rows(out)) == 1


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (
            "{subject} in {style}",
            f"{JSONL_PROMPTS} line 1: the row lacks the input column 'subject' (its columns: "
            "'prompt', 'style')",
        ),
        (
            "a plain prompt",
            "--template: 'a plain prompt' has no field: name columns in it, such as {subject}",
        ),
        ("{prompt", "--template: '{prompt' is not a format string: "),
        (
            "{} in {style}",
            "--template: '{} in {style}' has the field {}: fields are column "
            "names, such as {subject}",
        ),
        (
            "{prompt.upper}",
            "--template: '{prompt.upper}' has the field {prompt.upper}: fields "
            "are column names, such as {subject}",
        ),
        (
            "{prompt:{style}}",
            "--template: '{prompt:{style}}' has a field inside the format of {prompt}",
        ),
    ],
)
def test_a_bad_template_or_a_row_it_cannot_fill_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], template: str, message: str
) -> None:
    out = tmp_path / "out"
    args = ["-o", str(out), "--quiet", "--template", template]
    status = main(["generate", str(JSONL_PROMPTS), *args])
    assert status == 1
    err = capsys.readouterr().err
    assert err.startswith(f"imagetask: error: {message}") and err.count("\n") == 1, err


def test_column_and_template_are_refused_together(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--template", TEMPLATE, "--column", "prompt=style"]
    assert main(["generate", str(JSONL_PROMPTS), "-o", str(tmp_path / "o"), *args]) == 1
    assert capsys.readouterr().err == (
        "imagetask: error: --column and --template: the template names its columns itself\n"
    )


_SHOUT = '''
from imagetask.task._generation import ImageGeneration


class Shout(ImageGeneration):
    """Sends the prompt of `text` in capitals."""

    @property
    def inputs(self) -> list[str]:
        return ["text"]

    def format_input(self, input):
        return input["text"].upper()


class NotATask:
    pass
'''


def test_a_task_of_ones_own_from_the_current_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "shout_tasks_c22.py").write_text(_SHOUT)
    source = tmp_path / "in.csv"
    source.write_text("words\na fox\na cat\n")
    monkeypatch.chdir(tmp_path)
    # The folder is found as the console script runs: without it on the path beforehand.
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "shout_tasks_c22", raising=False)
    command = ["generate", "in.csv", "-o", "out", "--quiet", "--size", "4x4"]
    command += ["--task", "shout_tasks_c22:Shout", "--column", "text=words"]
    assert main([*command, "--limit", "1"]) == 0, capsys.readouterr().err
    assert main([*command, "--resume", "--save-artifacts"]) == 1
    assert capsys.readouterr().err == (
        "imagetask: error: out: the task differs from the run's: `save_artifacts` was false, "
        "now true\n"
    )
    assert main([*command, "--resume"]) == 0, capsys.readouterr().err
    rows = _rows(tmp_path / "out")
    assert [(row["words"], row["distilabel_metadata"]["raw_input_shout_0"]) for row in rows] == [
        ("a fox", "A FOX"),
        ("a cat", "A CAT"),
    ]
    report = json.loads((tmp_path / "out" / "run.json").read_text())
    assert report["task"]["type_info"] == {"module": "shout_tasks_c22", "name": "Shout"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--task", "needs_c22:Task"],
            "--task: cannot import needs_c22: ",
        ),
        (["--task", "shout_tasks_c22"], "--task: expected MODULE:CLASS, got 'shout_tasks_c22'"),
        (["--task", "no_such_module_c22:Task"], "--task: no module named 'no_such_module_c22'"),
        (
            ["--task", "shout_tasks_c22:Nope"],
            "--task: shout_tasks_c22:Nope is not an ImageTask subclass",
        ),
        (
            ["--task", "shout_tasks_c22:NotATask"],
            "--task: shout_tasks_c22:NotATask is not an ImageTask subclass",
        ),
        (
            ["--task", "shout_tasks_c22:Shout", "--template", "{a}"],
            "--task and --template: choose one",
        ),
        (
            ["--task", "shout_tasks_c22:Shout", "--column", "=words"],
            "--column: expected <input>=<column>, got '=words'",
        ),
        (
            ["--task", "shout_tasks_c22:Shout", "--column", "prompt=words"],
            "Shout: bad field `input_mappings`: 'prompt' is not one of the task's inputs ['text']",
        ),
    ],
)
def test_a_bad_task_spec_is_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    message: str,
) -> None:
    (tmp_path / "shout_tasks_c22.py").write_text(_SHOUT)
    (tmp_path / "needs_c22.py").write_text("import no_such_dependency_c22\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "shout_tasks_c22", raising=False)
    (tmp_path / "in.csv").write_text("words\na fox\n")
    assert main(["generate", "in.csv", "-o", "out", "--quiet", *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"imagetask: error: {message}") and err.count("\n") == 1, err
    if message.endswith(": "):  # the rest is Python's own wording; it names the module
        assert "no_such_dependency_c22" in err
