"""Faces without annotations: the detectors (``detectors``) and detection for runs (``detect``)."""
