"""tunebook: the command line that ties compiler/, runtime/ and reports/ together (see cli.py)."""
