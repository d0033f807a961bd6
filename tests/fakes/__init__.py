"""Fake backends for tests: real HTTP servers on 127.0.0.1 that check the exact requests the
real services' APIs expect and answer the way those services do."""
