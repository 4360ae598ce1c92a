"""Camera models: calibration files -> cameras with ``ray_to_pixel`` and ``pixel_to_ray``.

Rays are in the OpenCV camera frame (x right, y down, z forward); pixel centres sit at integer
(u, v). ``rotation``/``translation`` map camera coordinates to the vehicle frame (ISO 8855).

    cam = load_calibration("calibration/00012_FV.json")   # -> RadialPolyCamera
    uv = cam.ray_to_pixel(rays)        # (..., 3) -> (..., 2), NaN outside max_theta
    rays = cam.pixel_to_ray(uv)        # (..., 2) -> (..., 3) unit rays
"""

from ._base import CalibrationError, Camera, quaternion_to_rotation, rotation_to_quaternion
from ._calibration import FV_SAMPLE, load_calibration, save_calibration
from ._incidence import INCIDENCE_RINGS, incidence_angle, incidence_ring, pixel_solid_angle, ring_label
from ._kannala_brandt import KannalaBrandtCamera, fit_kannala_brandt
from ._radial_poly import RadialPolyCamera

__all__ = [
    "FV_SAMPLE",
    "INCIDENCE_RINGS",
    "CalibrationError",
    "Camera",
    "KannalaBrandtCamera",
    "RadialPolyCamera",
    "fit_kannala_brandt",
    "incidence_angle",
    "incidence_ring",
    "load_calibration",
    "pixel_solid_angle",
    "quaternion_to_rotation",
    "ring_label",
    "rotation_to_quaternion",
    "save_calibration",
]
