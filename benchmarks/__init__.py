"""ccsa's benchmarks: ``nox -s bench`` (or ``python -m benchmarks [NAME...]``)."""
