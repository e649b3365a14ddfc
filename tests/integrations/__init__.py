"""Tests of `imagetask.integrations`."""
