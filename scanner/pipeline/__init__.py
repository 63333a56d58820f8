"""Catalog → DALI crops: batches planned from the catalog (``batching``), the crop convention
(``geometry``), every DALI graph (``graphs``) and the producer that runs them, isolating files
DALI cannot decode (``cropper``)."""
