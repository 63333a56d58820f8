"""Where each annotated ``file_name`` is on disk, decided for all files at once.

A name is looked for as given under the annotation file's folder, then under the images folder,
then by its base name in the images folder. Each folder is listed once (``scandir``) and the
names are matched against the listing as Arrow columns: 2,000,000 missing files cost 40 µs each
as ``stat`` calls, about 2 µs each as a Python lookup per file, and well under 1 µs this way.
"""
from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from scanner.catalog.compact import BY_BASENAME, IN_ANN_ROOT, IN_IMAGES, NO_PATH

REFUSED = -2  # outside the roots without --allow-outside-paths


def listing(folder: str) -> pa.Array:
    """Names in ``folder`` that ``is_file() or is_symlink()`` accepts (a dangling or looping link
    counts: reading it then says what is wrong with it); empty if it cannot be listed."""
    try:
        with os.scandir(folder or ".") as it:
            names = [e.name for e in it if e.is_symlink() or e.is_file()]
    except OSError:
        names = []
    return pa.array(names, type=pa.string())


def resolve_files(files: pa.Array, ann_root, images_dir, allow_outside: bool) -> np.ndarray:
    """``where`` of each file name (int8): IN_ANN_ROOT, IN_IMAGES, BY_BASENAME, NO_PATH or REFUSED."""
    files = files.cast(pa.string())
    n = len(files)
    where = np.full(n, NO_PATH, dtype=np.int8)
    if not n:
        return where
    bases = (str(ann_root), str(images_dir))
    empty = pc.fill_null(pc.equal(files, ""), True).to_numpy(zero_copy_only=False)
    refused = np.zeros(n, dtype=bool)
    if not allow_outside:  # absolute, or a '..' part
        outside = pc.or_(pc.starts_with(files, "/"), pc.match_substring_regex(files, r"(^|/)\.\.(/|$)"))
        refused = pc.fill_null(outside, False).to_numpy(zero_copy_only=False)
    todo = ~(empty | refused)
    heads = pc.replace_substring_regex(files, r"/*[^/]*$", "")  # os.path.split's head
    names = pc.replace_substring_regex(files, r"^.*/", "")
    groups = pc.dictionary_encode(heads)
    codes = groups.indices.to_numpy(zero_copy_only=False)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(groups.dictionary) + 1))
    flat = listing(bases[1])
    for g, head in enumerate(groups.dictionary.to_pylist()):
        rows = order[bounds[g]:bounds[g + 1]]
        rows = rows[todo[rows]]
        if not len(rows):
            continue
        mine = names.take(pa.array(rows, type=pa.int64()))
        left = np.full(len(rows), NO_PATH, dtype=np.int8)
        for code, found_in in ((BY_BASENAME, flat), (IN_IMAGES, listing(os.path.join(bases[1], head))),
                               (IN_ANN_ROOT, listing(os.path.join(bases[0], head)))):  # last match wins
            left[pc.is_in(mine, value_set=found_in).to_numpy(zero_copy_only=False)] = code
        where[rows] = left
    where[refused] = REFUSED
    return where
