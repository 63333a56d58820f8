"""``dfscan explain``'s library: maps for chosen faces of a finished scan (``explain``, ``plots``)."""
