"""Training sources for ``dfscan train``: several datasets at once, each split without leaks.

``--data [NAME=]PATH[:WEIGHT]`` (repeatable) names one source:

- an OpenForensics root (``PATH/Images/<Split>/`` + ``PATH/<Split>_poly.json``): its
  ``--train-split`` trains and its ``--val-split`` validates, as the dataset splits them;
- a folder with ``real/`` and/or ``fake/`` subfolders of face crops or whole-face images (the
  label is the subfolder; each image is one face, cropped whole). It is split here by *group*:
  the part of the file name before the first ``__`` (``clipA__f0012.png`` → ``clipA``; a name
  without ``__`` is its own group), so frames of one clip or identity never sit on both sides;
- a folder of video files (``scanner.catalog.videos``): each clip is labelled by ``--labels CSV``
  (``file`` relative to the folder, ``label``), else by its top folder ``real/`` or ``fake/``. Its
  faces come from the video scan's own path (sampled frames → detector → tracker → DALI crops,
  ``scanner.run.training.video_crops``). It is split by clip: the CSV's optional ``group``
  column puts clips together (e.g. a face swap and its source clip), else each clip is a group.

NAME (default: the folder's name) labels the source in logs, ``history.parquet`` and the
per-source Val metrics; WEIGHT (default 1) scales each of its faces in the training loss.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from scanner.catalog import IMAGE_SUFFIXES, whole_image_catalog
from scanner.catalog.videos import FOLDER_LABELS as LABELS
from scanner.catalog.videos import find_videos, folder_label, read_groups, read_labels
from scanner.errors import DfscanError
from scanner.run.training import catalog_crops, split_crops, video_crops

SPEC = "[NAME=]PATH[:WEIGHT]"


@dataclass(frozen=True)
class Source:
    name: str
    path: Path
    weight: float = 1.0
    kind: str = "openforensics"  # or 'folders', 'videos'
    labels: str | None = None  # videos: the --labels CSV (relative paths are looked for in the folder too)


def parse_source(value: str, labels: str | None = None) -> Source:
    """One ``--data`` value as a Source. Raises DfscanError naming the value and the fix."""
    name, rest = None, value
    head, sep, tail = value.partition("=")
    if sep and re.fullmatch(r"[A-Za-z0-9_.+-]+", head):
        name, rest = head, tail
    weight = 1.0
    path_part, sep, w = rest.rpartition(":")
    if sep:
        try:
            weight = float(w)
        except ValueError:
            path_part = rest  # a colon inside the path itself
        else:
            rest = path_part
    if weight < 0:
        raise DfscanError(f"--data {value}: the weight must be 0 or more ({SPEC})")
    path = Path(rest)
    if not path.is_dir():
        raise DfscanError(f"--data {value}: {path} is not a folder ({SPEC})")
    if (path / "Images").is_dir() and any(path.glob("*_poly.json")):
        kind = "openforensics"
    elif find_videos(path):
        image = next((p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES), None)
        if image is not None:
            raise DfscanError(f"{path}: holds both video files and images (e.g. {image}); give each kind "
                              "its own folder and its own --data")
        kind = "videos"
    elif any((path / sub).is_dir() for sub in LABELS):
        kind = "folders"
    else:
        raise DfscanError(f"{path}: neither an OpenForensics root (Images/ and <Split>_poly.json), "
                          "a folder with real/ and fake/ subfolders nor a folder of video files; pass one "
                          "of those to --data")
    return Source(name or path.resolve().name, path, weight, kind, labels if kind == "videos" else None)


def parse_sources(values, labels: str | None = None) -> list[Source]:
    """Sources for every ``--data`` value (``labels``: the --labels CSV of video sources); a
    repeated name is an error."""
    sources = [parse_source(v, labels) for v in values]
    names = Counter(s.name for s in sources)
    twice = [n for n, c in names.items() if c > 1]
    if twice:
        raise DfscanError(f"--data: two sources are named {twice[0]!r}; name them, e.g. "
                          f"--data {twice[0]}2=PATH")
    return sources


def group_of(file_name: str) -> str:
    """The split group of a file: its name up to the first ``__``, else its whole stem."""
    stem = Path(file_name).stem
    return stem.split("__", 1)[0] if "__" in stem else stem


def folder_catalog(path: Path):
    """The whole-image catalog of ``path/real`` and ``path/fake``, labelled by folder.

    Raises DfscanError naming an image that lies in neither."""
    catalog = whole_image_catalog(path)
    for image in catalog.images.values():
        top = Path(image.file).parts[0].lower()
        if top not in LABELS or len(Path(image.file).parts) < 2:
            raise DfscanError(f"{image.path}: a folder source holds images only under real/ and fake/; "
                              "move or remove this one")
        # the catalog is columns (records are copies): label the faces in place, by position
        catalog.face_cols.label[catalog.face_positions(image.face_ids)] = LABELS[top]
    catalog.has_labels = True
    if not catalog.images:
        raise DfscanError(f"{path}: real/ and fake/ hold no images")
    return catalog


def split_groups(counts: dict[str, Counter], val_share: float) -> set[str]:
    """The validation groups: taken in a fixed pseudo-random order (SHA-1 of the name), a group
    joins validation while it brings a class that still has under ``val_share`` of its faces
    there, unless that would leave training without that class."""
    total = sum(counts.values(), Counter())
    val, in_val = set(), Counter()
    for g in sorted(counts, key=lambda g: hashlib.sha1(g.encode()).hexdigest()):
        c = counts[g]
        wanted = any(in_val[k] < val_share * total[k] for k in c)
        starves = any(in_val[k] + c[k] >= total[k] for k in c)
        if wanted and not starves:
            val.add(g)
            in_val += c
    return val


def _part_groups(source: Source, counts: dict[str, Counter], part: str, val_share: float, log) -> set[str]:
    val = split_groups(counts, val_share)
    chosen = val if part == "val" else set(counts) - val
    log(f"{source.name}: {part} groups ({len(chosen)} of {len(counts)}): {', '.join(sorted(chosen))}")
    if not chosen:
        how = ("clips, or a 'group' column in --labels" if source.kind == "videos"
               else "clips/identities (file-name prefix before '__')")
        raise DfscanError(f"{source.path}: too few groups to split into train and validation; "
                          f"add {how} or change --val-share")
    return chosen


def _folder_part(source: Source, part: str, val_share: float, log, catalog=None):
    catalog = catalog or folder_catalog(source.path)
    groups = {i: group_of(img.file) for i, img in catalog.images.items()}
    counts: dict[str, Counter] = {}
    for i, img in catalog.images.items():
        counts.setdefault(groups[i], Counter()).update(catalog.faces[f].label for f in img.face_ids)
    chosen = _part_groups(source, counts, part, val_share, log)
    return catalog.subset(sorted(i for i, g in groups.items() if g in chosen))


def video_clips(source: Source) -> tuple[list, dict[str, str]]:
    """A video source's clips (VideoRecords, each labelled) and ``{file: group}``. Raises
    DfscanError naming a clip that neither --labels nor its folder labels."""
    labels = read_labels(source.labels, source.path) if source.labels else {}
    groups = read_groups(source.labels, source.path) if source.labels else {}
    clips = []
    for clip in find_videos(source.path, labels):
        if clip.label is None:
            clip = replace(clip, label=folder_label(clip.file))
        if clip.label is None:
            raise DfscanError(f"{clip.path}: no label; add a row '{clip.file},real' (or fake) to "
                              f"{source.labels or 'a --labels CSV'}, or move it under real/ or fake/")
        clips.append(clip)
    return clips, {c.file: groups.get(c.file, c.file) for c in clips}


def video_part(source: Source, part: str, val_share: float, log=print) -> list:
    """The clips of ``part`` ('train' or 'val'): whole groups, each class's share of clips in
    validation at least ``val_share`` (``split_groups``)."""
    clips, groups = video_clips(source)
    counts: dict[str, Counter] = {}
    for c in clips:
        counts.setdefault(groups[c.file], Counter())[c.label] += 1
    chosen = _part_groups(source, counts, part, val_share, log)
    return [c for c in clips if groups[c.file] in chosen]


def source_crops(sources: list[Source], train_split: str, val_split: str, val_share: float = 0.25,
                 batch_size: int = 64, limit: int | None = None, log=print, detect=None, videos=None):
    """``crops(split, config)`` for ``engines.train.fit``: batches of ``(uint8 crops, labels,
    face ids, source name)`` from every source; ``split`` is ``train_split`` or ``val_split``.
    Video sources are sampled as ``videos`` (VideoSettings) says, their faces found by ``detect``
    (DetectSettings; None: each whole frame is one face)."""
    def crops(split, config):
        part = "train" if split == train_split else "val"
        for source in sources:
            if source.kind == "openforensics":
                batches = split_crops(source.path, split, config, batch_size, limit, log)
            elif source.kind == "videos":
                clips = video_part(source, part, val_share, log)
                batches = video_crops(clips, config, detect, videos, f"{source.name} {part}", batch_size, limit, log)
            else:
                catalog = _folder_part(source, part, val_share, log)
                batches = catalog_crops(catalog, config, f"{source.name} {part}", batch_size, limit, log)
            for pixels, labels, ids in batches:
                yield pixels, labels, [f"{source.name}:{i}" for i in ids], source.name

    return crops


def folder_annotations(source: Source, path, held_out: bool = False, val_share: float = 0.25,
                       log=print) -> Path:
    """Write COCO annotations for a folder source to ``path``: one whole-image box per image,
    labelled by its folder (only the validation groups with ``held_out``), so ``dfscan eval``
    scans it like any labelled split. Returns ``path``."""
    from PIL import Image

    from engines.files import write_atomic

    catalog = folder_catalog(source.path)
    if held_out:
        catalog = _folder_part(source, "val", val_share, log, catalog)
    images, annotations = [], []
    for i, img in catalog.images.items():
        try:
            with Image.open(img.path) as im:
                w, h = im.size
        except OSError as exc:
            raise DfscanError(f"{img.path}: not a readable image ({exc}); remove or replace it") from None
        images.append({"id": i, "file_name": img.file, "width": w, "height": h})
        for f in img.face_ids:
            annotations.append({"id": f, "image_id": i, "bbox": [0, 0, w, h], "iscrowd": 0,
                                "area": w * h, "category_id": catalog.faces[f].label})
    coco = {"images": images, "annotations": annotations,
            "categories": [{"id": 0, "name": "Real"}, {"id": 1, "name": "Fake"}]}
    return write_atomic(path, json.dumps(coco))


def video_labels(source: Source, path, held_out: bool = False, val_share: float = 0.25, log=print):
    """Write ``file,label`` for a video source's clips to ``path`` (only the validation groups'
    with ``held_out``), so ``dfscan eval`` scans them as ``dfscan run --labels``. Returns
    ``(path, the files)``."""
    from engines.files import write_atomic

    clips = video_part(source, "val", val_share, log) if held_out else video_clips(source)[0]
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows([("file", "label")] + [(c.file, c.label) for c in clips])
    return write_atomic(path, text.getvalue()), frozenset(c.file for c in clips)
