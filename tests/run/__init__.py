"""Tests of `imagetask.run`."""
