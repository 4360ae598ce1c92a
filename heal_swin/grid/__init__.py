"""HEALPix maths: pure, vectorised functions with healpy's names (NESTED by default).

numpy in, numpy out; torch in, torch out (same device). healpy is the oracle in the tests.
"""

from ._faces import (base_pixel_indices, base_pixels_keyword, check_base_pixels, format_base_pixels, global_to_local,
                     local_to_global, n_pixels, parse_base_pixels)
from ._interp import get_interp_weights, ring_above, ring_info
from ._pixelfunc import (ang2pix, ang2vec, check_nside, check_pixels, get_all_neighbours,
                         is_valid_nside, nest2ring, nest2xyf, npix2nside, nside2npix, nside2order,
                         nside2pixarea, nside2resol, order2nside, pix2ang, pix2vec, ring2nest,
                         ring2xyf, vec2ang, vec2pix, xyf2nest, xyf2ring)
from ._symmetry import (bilinear_rotation_weights, equatorial_flip, grid_symmetries, is_symmetry,
                        nearest_rotation_index, polar_turn_matrix, rotation_angle, symmetry_permutation)
from ._charts import chart_neighbour, extended_xyf, face_transitions, turn_xy
from ._windows import (SHIFT_STRATEGIES, ShiftTable, check_permutation, check_window_size, grid_shift,
                       invert_permutation, is_valid_window_size, nest_roll_shift, original_grid_shift,
                       polar_turn, relative_position_index, ring_shift, symmetric_grid_shift, window_layout,
                       window_mask)

__all__ = [
    "ang2pix", "ang2vec", "base_pixel_indices", "base_pixels_keyword", "check_base_pixels", "check_nside", "check_pixels",
    "format_base_pixels",
    "get_all_neighbours", "get_interp_weights", "global_to_local", "is_valid_nside",
    "local_to_global", "n_pixels", "nest2ring", "nest2xyf", "npix2nside", "nside2npix",
    "nside2order", "nside2pixarea", "nside2resol", "order2nside", "parse_base_pixels", "pix2ang",
    "pix2vec", "ring2nest", "ring2xyf", "ring_above", "ring_info", "vec2ang", "vec2pix",
    "xyf2nest", "xyf2ring",
    "chart_neighbour", "face_transitions", "turn_xy",
    "bilinear_rotation_weights", "equatorial_flip", "grid_symmetries", "is_symmetry", "nearest_rotation_index",
    "polar_turn_matrix", "rotation_angle", "symmetry_permutation",
    "SHIFT_STRATEGIES", "ShiftTable", "check_permutation", "check_window_size", "extended_xyf",
    "grid_shift", "invert_permutation", "is_valid_window_size", "nest_roll_shift", "original_grid_shift", "relative_position_index", "ring_shift",
    "window_layout", "window_mask", "polar_turn", "symmetric_grid_shift",
]
