"""OpenCV's frontal-face Haar cascade: fast, CPU only, frontal faces only.

Paper: Viola, Jones, "Rapid Object Detection using a Boosted Cascade of Simple Features", CVPR 2001;
Lienhart, Maydt, "An Extended Set of Haar-like Features for Rapid Object Detection", ICIP 2002.

The cascade XML ships in ``opencv-python-headless`` 4.x (5.x ships none). Its boxes are squares
from the brows to the lip line; ``BOX_TO_REFERENCE`` maps them onto the MTCNN convention that the
annotations (and so the model's ``crop_margin``) use. ``score`` is the cascade's last-stage sum
(``levelWeights``), not a probability: larger is more face-like.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from scanner.detect.detectors._registry import register_detector

CASCADE = "haarcascade_frontalface_default.xml"
# (width scale, height scale, centre shift down in box heights), fitted on realorfake Train
# (benchmarks/detect_recall.py --fit-haar): not on the sets the recall is reported for
BOX_TO_REFERENCE = (0.809, 1.081, 0.002)  # from 455 matched Train faces


class HaarCascade:
    name = "haar"

    def __init__(self, device: str = "cpu", min_face: int = 20, min_score: float | None = None,
                 scale_factor: float = 1.1, min_neighbors: int = 5):
        import cv2

        if device != "cpu":
            from scanner.errors import DfscanError

            raise DfscanError("the haar detector runs on the CPU only; use --device cpu or --detector mtcnn")
        path = f"{cv2.data.haarcascades}{CASCADE}"
        self.cascade = cv2.CascadeClassifier(path)
        if self.cascade.empty():
            from scanner.errors import DfscanError

            raise DfscanError(f"{path}: cascade missing; pip install 'opencv-python-headless<5'")
        self.min_face, self.min_score = min_face, min_score
        self.scale_factor, self.min_neighbors = scale_factor, min_neighbors

    def detect(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        import cv2

        out = []
        for image in images:
            gray = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
            rects, _, weights = self.cascade.detectMultiScale3(
                gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
                minSize=(self.min_face, self.min_face), outputRejectLevels=True)
            boxes = np.zeros((len(rects), 5), dtype=np.float32)
            if len(rects):
                sx, sy, dy = BOX_TO_REFERENCE
                r = np.asarray(rects, dtype=np.float32)
                cx, cy = r[:, 0] + r[:, 2] / 2, r[:, 1] + r[:, 3] / 2 + dy * r[:, 3]
                boxes[:, 2], boxes[:, 3] = r[:, 2] * sx, r[:, 3] * sy
                boxes[:, 0], boxes[:, 1] = cx - boxes[:, 2] / 2, cy - boxes[:, 3] / 2
                boxes[:, 4] = np.asarray(weights, dtype=np.float32).reshape(-1)
                if self.min_score is not None:
                    boxes = boxes[boxes[:, 4] >= self.min_score]
            out.append(boxes)
        return out


@register_detector("haar", description="OpenCV Haar cascade (Viola-Jones), frontal faces, CPU",
                   module="cv2", install="pip install 'opencv-python-headless<5'")
def haar(device: str = "cpu", min_face: int = 20, min_score: float | None = None) -> HaarCascade:
    return HaarCascade(device, min_face, min_score)
