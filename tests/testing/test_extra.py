"""hypothesis is an optional extra: `import imagetask` and the scripted backends do without
it, and what needs it says which extra to install."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def run_without_hypothesis(code: str) -> subprocess.CompletedProcess[str]:
    blocked = "import sys\nsys.modules['hypothesis'] = None  # makes `import hypothesis` fail\n"
    return subprocess.run(
        [sys.executable, "-c", blocked + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_import_imagetask_and_the_scripted_backends_need_no_hypothesis() -> None:
    done = run_without_hypothesis(
        """
        import imagetask, imagetask._bench, imagetask.cli
        from imagetask.testing import ScriptedModel
        task = imagetask.ImageGeneration(image_generation_model=ScriptedModel())
        print(len(task.process_batch([{"prompt": "a"}])))
        """
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "1\n", "")


def test_check_task_without_hypothesis_names_the_extra() -> None:
    done = run_without_hypothesis(
        """
        import imagetask
        from imagetask.testing import ScriptedModel, check_task
        try:
            check_task(imagetask.ImageGeneration(image_generation_model=ScriptedModel()))
        except imagetask.MissingExtraError as exc:
            print(exc)
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(
        "check_task needs the `hypothesis` package, which is not installed: "
        "pip install '.[testing]' in the imagetask source folder"
    )


def test_strategies_without_hypothesis_name_the_extra() -> None:
    done = run_without_hypothesis(
        """
        import imagetask
        from imagetask.testing.strategies import answers
        try:
            answers(1)
        except imagetask.MissingExtraError as exc:
            print(exc)
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(
        "imagetask.testing needs the `hypothesis` package, which is not installed: "
        "pip install '.[testing]' in the imagetask source folder"
    )
