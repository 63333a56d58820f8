"""The catalog: which images to scan, which face boxes each holds, and the checks of each file.

COCO / OpenForensics annotations (``coco``), or one whole-image face per file of a plain folder;
``files`` reads and checks one image before DALI sees it (``jpegcheck`` for JPEG structure).
"""
from scanner.catalog.coco import (IMAGE_SUFFIXES, catalog_from_coco, find_annotations, load_catalog, split_paths,
                                  whole_image_catalog)
from scanner.catalog.compact import Catalog, FaceRecord, ImageRecord
from scanner.catalog.files import DEFAULT_MAX_PIXELS, ImageInfo, probe_image, read_file

__all__ = ["IMAGE_SUFFIXES", "Catalog", "FaceRecord", "ImageRecord", "catalog_from_coco", "find_annotations",
           "load_catalog", "split_paths", "whole_image_catalog", "DEFAULT_MAX_PIXELS", "ImageInfo",
           "probe_image", "read_file"]
