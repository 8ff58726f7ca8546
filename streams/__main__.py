"""`python -m streams` is the `msli` command (for machines where the console script is not installed)."""

from streams.cli import main

main()
