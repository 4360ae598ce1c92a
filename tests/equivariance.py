"""The face sets the equivariance tests run on, as a pytest mark. The checks themselves are the library's:
`heal_swin.equivariance` (assert_equivariant, the grid symmetries, so3_errors) and `heal_swin.models.PlainFaceCNN`."""

import pytest

SPHERE, FACES_0_7 = tuple(range(12)), tuple(range(8))
FACE_SETS = pytest.mark.parametrize("faces", [SPHERE, FACES_0_7], ids=["sphere", "faces0-7"])
