"""The load test with faults and its exactly-once audit (`make load`; a small run in
`make test`)."""
