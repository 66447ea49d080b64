"""Stand-ins for the outside world, for `make demo` and the tests."""
