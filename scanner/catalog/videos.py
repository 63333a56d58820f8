"""The video files of a run, their labels (``--labels CSV``) and the ids their rows carry.

Ids: a video's faces share ``faces.parquet`` with the images' faces, so they take ids the images
cannot: video ``v`` (its place in the sorted file list) has ``image_id = 2**32 + v`` and face ids
``(v + 1) * 2**32 + n``. They stay the same across ``--resume`` (the file list does), and the face
id says which video a saved row belongs to.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from scanner.errors import DfscanError

VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"}
ID_SPAN = 2 ** 32  # image and face ids of the images stay below it


@dataclass(frozen=True)
class VideoRecord:
    index: int  # place in the sorted list of the run's videos
    file: str  # relative to the run's folder
    path: Path
    label: int | None = None  # 0 Real, 1 Fake

    @property
    def image_id(self) -> int:
        return ID_SPAN + self.index

    def face_id(self, n: int) -> int:
        return (self.index + 1) * ID_SPAN + n


def video_of_face(face_id: int) -> int | None:
    """The video index a face id belongs to, or None for an image's face."""
    return face_id // ID_SPAN - 1 if face_id >= ID_SPAN else None


def find_videos(folder, labels: dict[str, int] | None = None) -> list[VideoRecord]:
    """Every video file below ``folder`` (by suffix), sorted by path, with its label if any."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    labels = labels or {}
    out = []
    for n, p in enumerate(files):
        rel = p.relative_to(folder).as_posix()
        out.append(VideoRecord(n, rel, p, labels.get(rel)))
    return out


LABEL_WORDS = {"real": 0, "0": 0, "fake": 1, "1": 1}
FOLDER_LABELS = {"real": 0, "fake": 1}  # training sources: the top folder a file lies in


def folder_label(file: str) -> int | None:
    """0/1 for a file (relative to its source folder) below ``real/`` or ``fake/``, else None."""
    parts = Path(file).parts
    return FOLDER_LABELS.get(parts[0].lower()) if len(parts) > 1 else None


def _label_csv(csv_path, folder) -> tuple[Path, list[dict]]:
    path = Path(csv_path)
    if not path.is_file() and not path.is_absolute() and (Path(folder) / path).is_file():
        path = Path(folder) / path
    if not path.is_file():
        raise DfscanError(f"--labels {csv_path}: file not found")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DfscanError(f"--labels {path}: not a readable CSV ({exc})") from None
    if not rows or not {"file", "label"} <= set(rows[0]):
        raise DfscanError(f"--labels {path}: needs a header with columns 'file' and 'label'")
    return path, rows


def _file_key(row) -> str:
    return Path(str(row["file"]).strip()).as_posix()


def read_labels(csv_path, folder) -> dict[str, int]:
    """``file → 0/1`` from a CSV with columns ``file`` (relative to ``folder``) and ``label``
    (real/fake or 0/1); other columns are ignored. A relative ``csv_path`` that is not found
    from here is looked for in ``folder``. Raises DfscanError naming the file, row and fix."""
    path, rows = _label_csv(csv_path, folder)
    labels = {}
    for n, row in enumerate(rows, start=2):
        word = str(row.get("label") or "").strip().lower()
        if word not in LABEL_WORDS:
            raise DfscanError(f"--labels {path}: line {n}: label {row.get('label')!r}; use real, fake, 0 or 1")
        labels[_file_key(row)] = LABEL_WORDS[word]
    return labels


def read_groups(csv_path, folder) -> dict[str, str]:
    """``file → group`` from the same CSV's optional ``group`` column (empty cells and a missing
    column give no entry): clips that share a group, e.g. a face swap and its source clip, are
    never split between training and validation."""
    _, rows = _label_csv(csv_path, folder)
    return {_file_key(r): str(r["group"]).strip() for r in rows if str(r.get("group") or "").strip()}
