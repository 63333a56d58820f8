"""``python -m scanner.cli``: the ``dfscan`` command."""
from scanner.cli import main

main()
