"""quantkit benchmarks (not installed with the package; run from the repository root: `make bench`)."""
