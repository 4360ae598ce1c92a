"""The face sets the equivariance tests run on (a pytest mark); the checks themselves live in the library,
`heal_swin.equivariance` (assert_equivariant, the grid symmetries, so3_errors) and
`heal_swin.models.PlainFaceCNN`, and are re-exported here for tests that still import them from this module."""

import pytest

from heal_swin.equivariance import (TOLERANCE, assert_equivariant, equivariance_error, flip,  # noqa: F401
                                    local_index, rotation_permutation, rz, so3_errors)
from heal_swin.models import PlainFaceCNN  # noqa: F401

SPHERE, FACES_0_7 = tuple(range(12)), tuple(range(8))
FACE_SETS = pytest.mark.parametrize("faces", [SPHERE, FACES_0_7], ids=["sphere", "faces0-7"])
