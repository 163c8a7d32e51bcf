"""`python -m frameseek.cli` (how the server's worker processes are started)."""

from . import main

main()
