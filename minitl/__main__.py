"""`python -m minitl`: see minitl/commands/cli.py."""

from minitl.commands.cli import console

if __name__ == "__main__":
    console()
