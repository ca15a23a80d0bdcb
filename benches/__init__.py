"""distblob's benchmarks: pytest-benchmark suites and the side-by-side comparison script."""
