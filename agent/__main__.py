"""`python -m agent` runs the bitrag CLI (used where the console script is not on PATH)."""

from agent.cli import main

main()
