"""Detected boxes of video clips, kept so a clip is detected once (``dfscan train`` and
``dfscan eval`` on video sources: later epochs, runs and models reuse them).

Detection (MTCNN on a CPU) is by far the slowest step of a clip's scan, while decoding the sampled
frames again and cropping them with DALI is cheap; so the boxes are cached, not the crops, and one
entry serves every model and crop convention. An entry is ``<cache>/video-boxes/<key>.npz``
(``<cache>``: the engine cache folder, ``engines.cache.default_cache_dir`` or ``--cache-dir``):
per sampled frame its index and its ``(n, 5)`` boxes, plus the fields it was keyed by. The key is
the sha256 of the clip's bytes, the sampling and the detector settings (device included: a GPU's
boxes may differ in the last digits). Written atomically; an entry that cannot be read or names
other fields is rebuilt with a warning, never trusted.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from engines.cache import default_cache_dir, file_sha256
from engines.files import write_atomic

FORMAT = "dfscan-video-boxes/1"
FOLDER = "video-boxes"


class BoxCache:
    """``get(path, sampling)`` → ``{frame index: boxes}`` or None; ``put`` stores one clip's."""

    def __init__(self, detect_meta: dict, device: str, cache_dir=None, warn=print):
        self.root = Path(cache_dir or default_cache_dir()) / FOLDER
        self.detect = {**detect_meta, "det_device": device}
        self.warn = warn

    def _entry(self, path, sampling: dict) -> tuple[Path, dict]:
        fields = {"format": FORMAT, "sha256": file_sha256(path), **sampling, **self.detect}
        key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
        return self.root / f"{key}.npz", fields

    def get(self, path, sampling: dict) -> tuple[dict[int, np.ndarray] | None, tuple]:
        """``(boxes by frame index or None, handle for put)``."""
        entry, fields = self._entry(path, sampling)
        if not entry.is_file():
            return None, (entry, fields)
        try:
            with np.load(entry, allow_pickle=False) as z:
                if json.loads(str(z["fields"])) != fields:
                    raise ValueError("it was made for other settings")
                frames, counts, boxes = z["frames"], z["counts"], z["boxes"]
            ends = np.cumsum(counts)
            if len(frames) != len(counts) or (len(ends) and ends[-1] != len(boxes)):
                raise ValueError("its arrays disagree")
            return {int(f): boxes[e - c:e] for f, c, e in zip(frames, counts, ends)}, (entry, fields)
        except Exception as exc:  # a truncated or foreign file: any reader error means rebuild
            self.warn(f"{entry}: cached boxes of {path} are unreadable ({str(exc)[:120]}); detecting again")
            return None, (entry, fields)

    def put(self, handle, by_frame: dict[int, np.ndarray]) -> None:
        entry, fields = handle
        frames = sorted(by_frame)
        boxes = [np.asarray(by_frame[f], np.float32).reshape(-1, 5) for f in frames]
        arrays = {"fields": np.array(json.dumps(fields)), "frames": np.array(frames, np.int64),
                  "counts": np.array([len(b) for b in boxes], np.int64),
                  "boxes": np.concatenate(boxes) if boxes else np.zeros((0, 5), np.float32)}
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(entry, lambda fh: np.savez(fh, **arrays))
        except OSError as exc:  # a read-only cache costs speed, never the result
            self.warn(f"{entry.parent}: cannot keep detected boxes there ({exc.strerror or exc}); "
                      "set XDG_CACHE_HOME or --cache-dir to a writable folder")
