"""``dfscan bench``'s library: the sweep (``bench``), the timed passes (``timing``, ``baseline``),
engines per resolution (``engines``), resources (``probe``), results (``results``) and
synthetic multi-face sets (``synthetic``)."""
