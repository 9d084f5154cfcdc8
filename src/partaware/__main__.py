"""`python -m partaware`: the `partaware` command, for environments whose scripts are not on PATH."""
from .cli import main

main()
