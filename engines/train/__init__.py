"""Training: the epoch loop (``loop``), the crops it is handed (``data``), augmentation
(``augment``) and what a run leaves beside its checkpoint (``plots``). The crops come from the
caller as plain batches: this package never imports ``scanner``."""
