"""Fisheye <-> HEALPix sampling, cached per calibration.

FisheyeToHealpix: fisheye image / labels / depth -> maps over a set of base pixels (CPU and torch).
HealpixToFisheye: maps -> fisheye image (each image pixel takes the HEALPix pixel containing its ray).
views: rasterised views of HEALPix maps (Mollweide, orthographic) and the colour maps of the figures.
"""

from . import views

from ._cache import (CacheWarning, atomic_write, clear_memory_cache, default_cache_dir, load_checked_arrays,
                     save_checked_arrays)
from ._frames import ORIENTATIONS, check_rotation, sphere_to_camera
from ._rig import RigToHealpix
from ._sampling import SUBPIXEL, FisheyeSampler, FisheyeToHealpix, HealpixSampler, HealpixToFisheye

__all__ = ["FisheyeToHealpix", "HealpixToFisheye", "RigToHealpix", "HealpixSampler", "FisheyeSampler", "ORIENTATIONS",
           "SUBPIXEL", "check_rotation", "sphere_to_camera", "clear_memory_cache", "default_cache_dir", "CacheWarning",
           "atomic_write", "load_checked_arrays", "save_checked_arrays"]
