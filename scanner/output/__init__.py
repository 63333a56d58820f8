"""What a run leaves: the faces schema (``schema``), crash-safe parts and the manifest
(``parts``), and metrics when labels exist (``metrics``)."""
