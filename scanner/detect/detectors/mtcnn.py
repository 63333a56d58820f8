"""MTCNN face detector: P-, R- and O-net cascade over an image pyramid.

Paper: Zhang, Zhang, Li, Qiao, "Joint Face Detection and Alignment using Multi-task Cascaded
Convolutional Networks", IEEE Signal Processing Letters 23(10), 2016.

The networks and the pre/post-processing follow facenet-pytorch (MIT), whose wheel ships the
converted weights (``facenet_pytorch/data/{p,r,o}net.pt``, 2 MB). That package pins torch<2.3 and
numpy<2 and imports ``requests`` at import time, so it is installed with ``--no-deps`` and only
its weight files are read; the code below does not import it. The reference boxes in
``shared/data`` were made by an MTCNN, so this detector's boxes follow the same convention
(tight, taller than wide, brow to chin).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Sequence

import numpy as np

from scanner.detect.detectors._registry import register_detector

THRESHOLDS = (0.6, 0.7, 0.7)  # per stage, as in the paper's released models
# The last stage's threshold, raised from 0.7: on realorfake Train (480 faces, not a set the
# recall is reported on) every face scored >= 0.98 and 16 of 23 unannotated detections < 0.9.
DEFAULT_MIN_SCORE = 0.9
PYRAMID_FACTOR = 0.709


def weights_dir() -> Path:
    """Where facenet-pytorch keeps the MTCNN weights (found without importing the package)."""
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        from scanner.errors import DfscanError

        raise DfscanError("MTCNN weights not found; pip install --no-deps facenet-pytorch==2.6.0")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def _nets():
    import torch
    from torch import nn

    class PNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
            self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
            self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
            self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
            self.conv4_1, self.conv4_2 = nn.Conv2d(32, 2, 1), nn.Conv2d(32, 4, 1)

        def forward(self, x):
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
            return self.conv4_2(x), torch.softmax(self.conv4_1(x), dim=1)

    class RNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
            self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
            self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
            self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
            self.dense5_1, self.dense5_2 = nn.Linear(128, 2), nn.Linear(128, 4)

        def forward(self, x):
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.pool2(self.prelu2(self.conv2(x)))
            x = self.prelu3(self.conv3(x))
            # the weights came from Caffe: flatten in (W, H, C) order
            x = self.prelu4(self.dense4(x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)))
            return self.dense5_2(x), torch.softmax(self.dense5_1(x), dim=1)

    class ONet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
            self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
            self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
            self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
            self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
            self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
            self.dense6_1, self.dense6_2 = nn.Linear(256, 2), nn.Linear(256, 4)
            self.dense6_3 = nn.Linear(256, 10)  # landmarks: loaded, not used

        def forward(self, x):
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.pool2(self.prelu2(self.conv2(x)))
            x = self.pool3(self.prelu3(self.conv3(x)))
            x = self.prelu4(self.conv4(x))
            x = self.prelu5(self.dense5(x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)))
            return self.dense6_2(x), torch.softmax(self.dense6_1(x), dim=1)

    return PNet, RNet, ONet


class MTCNN:
    """``detect(images)`` → per image ``(n, 5)`` ``x, y, w, h, score``; ``score`` is O-net's
    face probability. Faces smaller than ``min_face`` pixels (in the image given) are not sought."""

    name = "mtcnn"

    def __init__(self, device: str = "cpu", min_face: int = 20, min_score: float = DEFAULT_MIN_SCORE,
                 threads: int | None = 1):
        import torch

        if min_face < 12:
            from scanner.errors import DfscanError

            raise DfscanError(f"min_face {min_face}: MTCNN's smallest window is 12 pixels")
        self.device = torch.device("cuda" if device == "gpu" else device)
        self.min_face, self.thresholds = min_face, (THRESHOLDS[0], THRESHOLDS[1], min_score)
        self.threads = threads if self.device.type == "cpu" else None
        folder = weights_dir()
        nets = []
        for cls, file in zip(_nets(), ("pnet.pt", "rnet.pt", "onet.pt")):
            net = cls()
            net.load_state_dict(torch.load(folder / file, map_location="cpu", weights_only=True))
            nets.append(net.eval().to(self.device))
        self.pnet, self.rnet, self.onet = nets

    def detect(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        import torch

        # The cascade is many small ops. On this project's 2-core CPU, shared with other jobs,
        # one torch thread ran it 3-5x faster than two (OpenMP workers waiting on each other),
        # so torch's thread count is lowered for the call and restored after it.
        before = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                return [self._detect_one(img) for img in images]
        finally:
            torch.set_num_threads(before)

    # -- the cascade ------------------------------------------------------------------------------
    def _detect_one(self, image: np.ndarray) -> np.ndarray:
        import torch

        img = torch.tensor(image, device=self.device)  # a copy: DALI reuses its buffers
        img = img.permute(2, 0, 1).unsqueeze(0).float()
        h, w = img.shape[2:]
        boxes = self._stage1(img, h, w)
        if len(boxes):
            boxes = self._refine(img, boxes, self.rnet, 24, self.thresholds[1], h, w)
        if len(boxes):
            boxes = self._refine(img, boxes, self.onet, 48, self.thresholds[2], h, w, last=True)
        out = np.zeros((len(boxes), 5), dtype=np.float32)
        if len(boxes):
            b = boxes.cpu().numpy()
            out[:, 0], out[:, 1] = b[:, 0], b[:, 1]
            out[:, 2], out[:, 3], out[:, 4] = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1], b[:, 4]
        return out

    def _scales(self, h: int, w: int) -> list[float]:
        scale, side, scales = 12.0 / self.min_face, min(h, w) * 12.0 / self.min_face, []
        while side >= 12:
            scales.append(scale)
            scale, side = scale * PYRAMID_FACTOR, side * PYRAMID_FACTOR
        return scales

    def _stage1(self, img, h: int, w: int):
        """P-net over the pyramid: candidate windows ``(x0, y0, x1, y1, score)``, squared."""
        import torch
        from torch.nn.functional import interpolate
        from torchvision.ops import nms

        found = []
        for scale in self._scales(h, w):
            data = interpolate(img, size=(int(h * scale + 1), int(w * scale + 1)), mode="area")
            reg, prob = self.pnet((data - 127.5) * 0.0078125)
            score = prob[0, 1]
            ys, xs = torch.nonzero(score >= self.thresholds[0], as_tuple=True)
            if not len(ys):
                continue
            cells = torch.stack([xs, ys], 1).float()
            q1 = torch.floor((2 * cells + 1) / scale)
            q2 = torch.floor((2 * cells + 12) / scale)
            cand = torch.cat([q1, q2, score[ys, xs, None], reg[0][:, ys, xs].T], 1)
            found.append(cand[nms(cand[:, :4], cand[:, 4], 0.5)])
        if not found:
            return torch.zeros(0, 5, device=img.device)
        cand = torch.cat(found)
        cand = cand[nms(cand[:, :4], cand[:, 4], 0.7)]
        bw, bh = cand[:, 2] - cand[:, 0], cand[:, 3] - cand[:, 1]
        boxes = torch.stack([cand[:, 0] + cand[:, 5] * bw, cand[:, 1] + cand[:, 6] * bh,
                             cand[:, 2] + cand[:, 7] * bw, cand[:, 3] + cand[:, 8] * bh, cand[:, 4]], 1)
        return _square(boxes)

    def _refine(self, img, boxes, net, size: int, threshold: float, h: int, w: int, last: bool = False):
        """R-net or O-net on each window resized to ``size``: keep, regress, suppress."""
        import torch
        from torch.nn.functional import interpolate
        from torchvision.ops import nms

        ints = boxes[:, :4].trunc().int().cpu().numpy()
        x0, y0 = np.maximum(ints[:, 0], 1), np.maximum(ints[:, 1], 1)
        x1, y1 = np.minimum(ints[:, 2], w), np.minimum(ints[:, 3], h)
        valid = np.nonzero((x1 > x0 - 1) & (y1 > y0 - 1))[0]
        if not len(valid):
            return boxes[:0]
        boxes = boxes[torch.as_tensor(valid, device=boxes.device)]
        crops = [interpolate(img[:, :, y0[k] - 1:y1[k], x0[k] - 1:x1[k]], size=(size, size), mode="area")
                 for k in valid]
        reg, prob = net((torch.cat(crops) - 127.5) * 0.0078125)
        keep = prob[:, 1] > threshold
        boxes, reg = torch.cat([boxes[keep, :4], prob[keep, 1:2]], 1), reg[keep]
        if not last:
            pick = nms(boxes[:, :4], boxes[:, 4], 0.7)
            return _square(_regress(boxes[pick], reg[pick]))
        boxes = _regress(boxes, reg)
        pick = _nms_min(boxes[:, :4].cpu().numpy(), boxes[:, 4].cpu().numpy(), 0.7)
        return boxes[torch.as_tensor(pick, device=boxes.device)]


def _regress(boxes, reg):
    """Apply the box regression (Caffe convention: widths count both end pixels)."""
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    out = boxes.clone()
    out[:, 0] += reg[:, 0] * w
    out[:, 1] += reg[:, 1] * h
    out[:, 2] += reg[:, 2] * w
    out[:, 3] += reg[:, 3] * h
    return out


def _square(boxes):
    """Grow each box to a square about its centre (the next stage's input is square)."""
    import torch

    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = torch.maximum(w, h)
    out = boxes.clone()
    out[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    out[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def _nms_min(boxes, scores, threshold: float):
    """Greedy NMS where overlap is intersection over the SMALLER box (MTCNN's last stage):
    it also removes a box nested inside a better one."""
    order = np.argsort(-scores)
    area = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    keep = []
    while len(order):
        i, rest = order[0], order[1:]
        keep.append(i)
        iw = np.maximum(0.0, np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]) + 1)
        ih = np.maximum(0.0, np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]) + 1)
        order = rest[iw * ih / np.minimum(area[i], area[rest]) <= threshold]
    return np.array(keep, dtype=np.int64)


@register_detector("mtcnn", description="MTCNN (Zhang et al. 2016), weights from facenet-pytorch",
                   module="facenet_pytorch", install="pip install --no-deps facenet-pytorch==2.6.0")
def mtcnn(device: str = "cpu", min_face: int = 20, min_score: float = DEFAULT_MIN_SCORE) -> MTCNN:
    return MTCNN(device, min_face, min_score)
