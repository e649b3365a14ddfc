"""`imagetask select`: a run narrowed to the images chosen by a marks file, by failure
and by a column, written as a run folder in the run's format with its images."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from imagetask.cli import main
from imagetask.curate import Mark, Marks, Where, read_marks, select, write_marks
from imagetask.errors import ConfigError, ReadError, RunError
from imagetask.gallery._page import view_run
from imagetask.io import RunFolder
from imagetask.io._run_folder import image_payload
from tests.support.gallery_runs import CAT, MOON, PROMPTS, make_run

PROMPTS_4 = [*PROMPTS[:3], PROMPTS[MOON]]
"""Three prompts that make both images, then one whose generations both fail."""


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def image_of(cell: Any) -> bytes:
    payload = image_payload(cell)
    assert payload.data is not None
    return payload.data


def rows_of(folder: Path) -> list[dict[str, Any]]:
    return [item.row for item in RunFolder(folder).rows()]


def marks_for(run: Path, *picks: tuple[int, int, str]) -> Marks:
    """Marks of the run's images at `(input, generation)` with their true hashes."""
    rows = rows_of(run)
    grouped = RunFolder(run).task["group_generations"]
    marks = []
    for index, generation, mark in picks:
        if grouped:
            cell = rows[index]["image"][generation]
        else:
            cell = rows[index * RunFolder(run).task["num_generations"] + generation]["image"]
        marks.append(Mark(index, generation, sha(image_of(cell)), mark))
    return Marks(run.name, tuple(marks))


def test_marks_round_trip_through_their_file(tmp_path: Path) -> None:
    marks = Marks("run", (Mark(0, 1, "a" * 64, "reject"), Mark(2, 0, "b" * 64, "keep")))
    write_marks(tmp_path / "marks.json", marks)
    assert json.loads((tmp_path / "marks.json").read_text()) == {
        "format": "imagetask-marks",
        "version": 1,
        "run": "run",
        "marks": [
            {"input": 0, "generation": 1, "sha256": "a" * 64, "mark": "reject"},
            {"input": 2, "generation": 0, "sha256": "b" * 64, "mark": "keep"},
        ],
    }
    assert read_marks(tmp_path / "marks.json") == marks
    assert marks.rejected() == 1


def test_rejected_images_leave_an_ungrouped_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    make_run(run, PROMPTS_4)
    source = rows_of(run)
    marks = marks_for(run, (0, 1, "reject"), (1, 0, "keep"), (2, 0, "reject"), (2, 1, "reject"))
    write_marks(tmp_path / "marks.json", marks)

    chosen = select(run, tmp_path / "out", marks=tmp_path / "marks.json")

    assert (chosen.inputs, chosen.rows, chosen.images, chosen.failed, chosen.rejected) == (
        3,
        5,
        3,
        2,
        3,
    )
    kept = rows_of(tmp_path / "out")
    assert kept == [source[0], source[2], source[3], source[6], source[7]]
    files = sorted(
        p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*")
    )
    images = sorted(row["image_path"] for row in kept if row["image_path"])
    assert files == sorted(
        [
            "artifacts",
            "artifacts/image_generation_0",
            "artifacts/image_generation_0/images",
            "artifacts/image_generation_0/metadata.json",
            "data.jsonl",
            "run.json",
            *images,
        ]
    )
    for row in kept[:3]:
        assert (tmp_path / "out" / row["image_path"]).read_bytes() == image_of(row["image"])
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert record["selected_from"] == {
        "run": "run",
        "rows_in": 4,
        "marks": str(tmp_path / "marks.json"),
        "rejected": 3,
        "reject_failed": False,
        "dropped_failed": 0,
        "where": [],
        "dropped_where": 0,
        "num_generations": 2,
    }
    assert (record["rows_in"], record["rows_out"], record["images"], record["failed"]) == (
        3,
        5,
        3,
        2,
    )
    assert record["task"] == {**RunFolder(run).task, "num_generations": 1}
    # Input 0 kept one of its two images: each row is its own input for the gallery.
    view = view_run(RunFolder(tmp_path / "out"), tmp_path / "out" / "gallery")
    assert [len(entry.generations) for entry in view.entries] == [1, 1, 1, 1, 1]
    assert (view.images, view.failures) == (3, 2)


def test_unmarked_images_are_kept_and_the_grouping_stays_when_inputs_keep_all(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    make_run(run, PROMPTS_4, save_artifacts=False)
    marks = marks_for(run, (1, 0, "reject"), (1, 1, "reject"), (0, 0, "keep"))
    write_marks(tmp_path / "marks.json", marks)

    chosen = select(run, tmp_path / "out", marks=tmp_path / "marks.json")

    source = rows_of(run)
    assert rows_of(tmp_path / "out") == source[:2] + source[4:]
    assert (chosen.inputs, chosen.rows, chosen.images, chosen.failed) == (3, 6, 4, 2)
    assert RunFolder(tmp_path / "out").task == RunFolder(run).task
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["data.jsonl", "run.json"]


def test_a_grouped_row_loses_its_rejected_images_and_leaves_when_none_is_left(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    make_run(run, PROMPTS_4, group_generations=True)
    source = rows_of(run)
    marks = marks_for(run, (0, 0, "reject"), (1, 0, "reject"), (1, 1, "reject"))
    write_marks(tmp_path / "marks.json", marks)

    chosen = select(run, tmp_path / "out", marks=tmp_path / "marks.json", reject_failed=True)

    first = {
        **source[0],
        "image": source[0]["image"][1:],
        "image_path": source[0]["image_path"][1:],
        "distilabel_metadata": source[0]["distilabel_metadata"][1:],
    }
    assert rows_of(tmp_path / "out") == [first, source[2]]
    assert (chosen.inputs, chosen.rows, chosen.images, chosen.rejected, chosen.dropped_failed) == (
        2,
        2,
        3,
        3,
        2,
    )
    assert RunFolder(tmp_path / "out").task == RunFolder(run).task
    view = view_run(RunFolder(tmp_path / "out"), tmp_path / "out" / "gallery")
    assert [len(entry.generations) for entry in view.entries] == [1, 2]


def test_a_parquet_run_selects_into_a_dataset_that_datasets_loads(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    run = tmp_path / "run"
    make_run(run, PROMPTS_4, format="parquet")

    chosen = select(
        run, tmp_path / "out", reject_failed=True, where=[Where.parse("prompt!=" + PROMPTS[1])]
    )

    assert (chosen.rows, chosen.images, chosen.dropped_failed, chosen.dropped_where) == (4, 4, 2, 2)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "artifacts", "data", "run.json"]
    loaded = datasets.load_dataset(str(out), split="train")
    assert loaded["prompt"] == [PROMPTS[0], PROMPTS[0], PROMPTS[2], PROMPTS[2]]
    source = rows_of(run)
    assert [image_of(row["image"]) for row in rows_of(out)] == [
        image_of(row["image"]) for row in source[:2] + source[4:6]
    ]
    assert "4 rows in 1 Parquet file under `data/`" in (out / "README.md").read_text()


def test_where_reads_its_value_as_json_where_it_parses(tmp_path: Path) -> None:
    assert Where.parse("n=3") == Where("n", 3)
    assert Where.parse('n!="3"') == Where("n", "3", equal=False)
    assert Where.parse("prompt=a cat") == Where("prompt", "a cat")
    with pytest.raises(
        ConfigError, match=r"^--where: expected COLUMN=VALUE or COLUMN!=VALUE, got 'x'$"
    ):
        Where.parse("x")
    run = tmp_path / "run"
    make_run(run, PROMPTS[:2])
    with pytest.raises(ConfigError) as caught:
        select(run, tmp_path / "out", where=[Where.parse("colour=red")])
    assert str(caught.value) == (
        f"--where colour=\"red\": {run / 'data.jsonl'} line 1 has no column 'colour'"
    )
    assert not (tmp_path / "out").exists()


def test_the_output_folder_must_be_new_or_empty(tmp_path: Path) -> None:
    run = tmp_path / "run"
    make_run(run, PROMPTS[:2])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(RunError, match="the output folder exists and is not empty"):
        select(run, tmp_path / "out")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]
    with pytest.raises(RunError, match="the output folder exists and is not empty"):
        select(run, run)


def bad_marks(run: Path) -> list[tuple[str, Any, str]]:
    """(name, the file's JSON, the error after `<file>: `)."""
    good = marks_for(run, (0, 0, "reject"))
    entry = {"input": 0, "generation": 0, "sha256": good.marks[0].sha256, "mark": "reject"}
    other = marks_for(run, (0, 1, "reject")).marks[0].sha256

    def doc(*entries: Any, run_name: str = "run") -> dict[str, Any]:
        return {"format": "imagetask-marks", "version": 1, "run": run_name, "marks": list(entries)}

    return [
        ("not a marks file", {"marks": []}, 'not a marks file (no "format": "imagetask-marks")'),
        ("version", {**doc(), "version": 2}, "marks file version 2, not 1"),
        ("run", {**doc(), "run": 3}, "`run` is not the name of a run folder"),
        ("marks", {**doc(), "marks": {}}, "`marks` is not a list"),
        ("entry", doc(entry, [1]), "marks[1]: not an object"),
        ("missing key", doc({"input": 0}), "marks[0]: no `generation`"),
        ("unknown key", doc({**entry, "row": 3}), "marks[0]: unknown key `row`"),
        ("index", doc({**entry, "input": -1}), "marks[0]: `input` is -1, not a 0-based index"),
        (
            "bool index",
            doc({**entry, "generation": True}),
            "marks[0]: `generation` is True, not a 0-based index",
        ),
        (
            "hash",
            doc({**entry, "sha256": "abc"}),
            "marks[0]: `sha256` is not 64 lowercase hex digits",
        ),
        (
            "mark",
            doc({**entry, "mark": "maybe"}),
            "marks[0]: `mark` is 'maybe', not keep or reject",
        ),
        ("twice", doc(entry, entry), "marks[1]: input 0 generation 0 is marked already (marks[0])"),
        ("wrong run", doc(entry, run_name="other"), "the marks are of the run 'other', not 'run'"),
        (
            "no such input",
            doc(entry, {**entry, "input": 9}),
            "marks[1]: the run has no image at input 9 generation 0",
        ),
        (
            "no such generation",
            doc({**entry, "generation": 2}),
            "marks[0]: the run has no image at input 0 generation 2",
        ),
        (
            "failed",
            doc({**entry, "input": 3}),
            "marks[0]: input 3 generation 0 of the run failed: it has no image",
        ),
        (
            "another image",
            doc(entry, {**entry, "input": 1, "sha256": other}),
            f"marks[1]: the image at input 1 generation 0 is not the one marked (its sha256 is "
            f"{marks_for(run, (1, 0, 'keep')).marks[0].sha256}, not {other}): the marks are of "
            "another version of the run",
        ),
    ]


def test_a_bad_marks_file_is_one_line_naming_the_file_and_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    make_run(run, PROMPTS_4)
    marks = tmp_path / "marks.json"
    for name, content, error in bad_marks(run):
        marks.write_text(json.dumps(content))
        with pytest.raises(ReadError) as caught:
            select(run, tmp_path / "out", marks=marks)
        assert str(caught.value) == f"{marks}: {error}", name
        assert not (tmp_path / "out").exists(), name
        status = main(["select", str(run), "-o", str(tmp_path / "out"), "--marks", str(marks)])
        assert (status, capsys.readouterr().err) == (1, f"imagetask: error: {marks}: {error}\n")
    marks.write_text("{")
    with pytest.raises(ReadError, match=rf"^{marks}: not a readable marks file: "):
        select(run, tmp_path / "out", marks=marks)


def test_the_command_reports_what_it_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    make_run(run, [PROMPTS[0], PROMPTS[CAT], PROMPTS[MOON]])
    write_marks(tmp_path / "marks.json", marks_for(run, (0, 0, "reject")))
    out = tmp_path / "out"
    status = main(
        [
            "select",
            str(run),
            "-o",
            str(out),
            "--marks",
            str(tmp_path / "marks.json"),
            "--reject-failed",
            "--where",
            f"prompt!={PROMPTS[2]}",
        ]
    )
    assert (status, capsys.readouterr().out) == (
        0,
        f"imagetask: 2 images (0 failed generations) of 2 input rows kept in 2 rows; left "
        f"out: 1 rejected, 3 failed, 0 not matching -> {out}\n",
    )
    assert [row["prompt"] for row in rows_of(out)] == [PROMPTS[0], PROMPTS[CAT]]
    assert main(["select", str(run), "-o", str(out), "--where", "nope"]) == 1
    assert capsys.readouterr().err == (
        "imagetask: error: --where: expected COLUMN=VALUE or COLUMN!=VALUE, got 'nope'\n"
    )


def test_a_row_whose_image_is_only_in_its_file_is_hashed_from_the_file(tmp_path: Path) -> None:
    run = tmp_path / "run"
    make_run(run, PROMPTS[:1], num_generations=1)
    row = rows_of(run)[0]
    data = base64.b64decode(row["image"])
    (run / "data.jsonl").write_text(json.dumps({**row, "image": None}) + "\n")
    write_marks(tmp_path / "marks.json", Marks("run", (Mark(0, 0, sha(data), "keep"),)))
    chosen = select(run, tmp_path / "out", marks=tmp_path / "marks.json")
    assert (chosen.images, chosen.failed) == (1, 0)
    assert (tmp_path / "out" / row["image_path"]).read_bytes() == data


def test_a_run_without_inlined_images_is_selected_and_viewed_from_its_files(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    make_run(run, PROMPTS_4, inline_images=False)
    source = rows_of(run)
    assert all("image" not in row for row in source)
    data = (run / source[1]["image_path"]).read_bytes()
    write_marks(tmp_path / "marks.json", Marks("run", (Mark(0, 1, sha(data), "reject"),)))
    chosen = select(run, tmp_path / "out", marks=tmp_path / "marks.json")
    assert (chosen.images, chosen.failed, chosen.rejected) == (5, 2, 1)
    kept = rows_of(tmp_path / "out")
    assert kept == [source[0], *source[2:]]
    for row in kept[:5]:
        assert (tmp_path / "out" / row["image_path"]).is_file()
    view = view_run(RunFolder(run), run / "gallery")
    assert (view.images, view.failures) == (6, 2)
