"""Tests of `imagetask.build`."""
