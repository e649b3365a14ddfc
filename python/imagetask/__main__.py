"""`python -m imagetask`: the `imagetask` command."""

from imagetask.cli import run_main

run_main()
