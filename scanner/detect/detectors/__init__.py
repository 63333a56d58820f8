"""Face detectors for images without annotations: a registry plus one module per detector.

Importing this package registers every detector but imports no detector's heavy dependencies;
``create_detector(name)`` builds one and says what to install when it cannot.
"""
from scanner.detect.detectors._registry import (Detector, DetectorEntry, create_detector, get_detector_entry,
                                                list_detectors, register_detector)

# isort: split
from scanner.detect.detectors import haar, mtcnn  # noqa: E402,F401  (registration)

__all__ = ["Detector", "DetectorEntry", "create_detector", "get_detector_entry", "list_detectors",
           "register_detector"]
