"""`python -m trainyard` is the `trainyard` command (for an interpreter whose scripts are elsewhere)."""

from trainyard.cli import main

main()
