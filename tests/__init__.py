"""The test suite of imagetask, one package per package of the library."""
