"""``python -m benchmarks [--quick] [--skip-demo]``: print a table, write benchmarks/results.json."""

from .bench import main

main()
