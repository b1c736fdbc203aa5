"""`python -m tandem` runs the command line."""

from tandem.cli import main

main()
