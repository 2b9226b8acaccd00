"""The command line, in one place: `python -m minitl` (cli.py parses every command's options),
the comparison table (compare.py), the probe at every layer (layer_probe.py) and the install
doctor (check.py)."""
