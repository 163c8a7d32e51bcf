"""`python -m benchmarks` lists the benchmark scripts; each prints a table and writes JSON."""

import pathlib

here = pathlib.Path(__file__).parent
for p in sorted(here.rglob("bench_*.py")):
    print(f"python -m benchmarks.{'.'.join(p.relative_to(here).with_suffix('').parts)}")
