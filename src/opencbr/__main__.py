"""`python -m opencbr` is the `opencbr` command."""

from opencbr.cli import main

main()
