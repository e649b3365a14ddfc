"""Tests of the `imagetask` command: `imagetask.cli`, and `imagetask bench` (`_bench`)."""
