"""The scan itself: crops → engine → rows (``scan``), one ``dfscan run`` from catalog to output
(``job``), the same on a Ray cluster (``distributed``), and crops for training (``training``)."""
