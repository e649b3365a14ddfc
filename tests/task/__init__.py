"""Tests of `imagetask.task`."""
