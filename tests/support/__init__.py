"""What the tests share: loopback servers, backends, run helpers and readers of outputs."""
