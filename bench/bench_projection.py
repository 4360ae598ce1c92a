"""Projection benchmark: sampling-map build time and per-frame projection time.

One 1280×966 WoodScape FV frame (the sample calibration): RGB bilinear + labels nearest, CPU path
(OpenCV/numpy) and torch path, single thread, median of several runs. One JSON line per setting.

    python bench/bench_projection.py [--nside 64 128 256] [--repeats 30] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile

from _timing import median_ms


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nside", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--faces", default="0-7")
    args = parser.parse_args(argv)

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import cv2
    import numpy as np
    import torch

    from heal_swin import cameras, grid, projection

    cv2.setNumThreads(args.threads)
    torch.set_num_threads(args.threads)
    cam = cameras.load_calibration(cameras.FV_SAMPLE)
    faces = grid.parse_base_pixels(args.faces)
    rng = np.random.default_rng(0)
    vv, uu = np.mgrid[0:cam.height, 0:cam.width]
    image = np.stack([(uu * 7) % 256, (vv * 5) % 256, rng.integers(0, 256, uu.shape)], -1).astype(np.uint8)
    labels = ((uu // 64 + vv // 48) % 10).astype(np.uint8)
    image_t = torch.from_numpy(image).permute(2, 0, 1)[None].contiguous()
    labels_t = torch.from_numpy(labels)

    for nside in args.nside:
        def build_f2h():
            projection.clear_memory_cache()
            return projection.FisheyeToHealpix(cam, nside, faces, cache_dir=False)

        def build_h2f():
            projection.clear_memory_cache()
            return projection.HealpixToFisheye(cam, nside, faces, cache_dir=False)

        with tempfile.TemporaryDirectory() as tmp:
            projection.FisheyeToHealpix(cam, nside, faces, cache_dir=tmp)

            def load_f2h():
                projection.clear_memory_cache()
                return projection.FisheyeToHealpix(cam, nside, faces, cache_dir=tmp)

            load_ms = median_ms(load_f2h, max(3, args.repeats // 5), warmup=1)
        build_ms = median_ms(build_f2h, max(3, args.repeats // 5), warmup=1)
        back_ms = median_ms(build_h2f, max(3, args.repeats // 10), warmup=1)
        proj = build_f2h()
        proj._opencv_maps()  # fixed-point maps are built on first use; time frames, not set-up
        image_ms = median_ms(lambda: proj.project_image(image), args.repeats)
        labels_ms = median_ms(lambda: proj.project_labels(labels), args.repeats)
        frame_ms = median_ms(lambda: (proj.project_image(image), proj.project_labels(labels)), args.repeats)
        sampler = proj.module()
        with torch.inference_mode():
            torch_ms = median_ms(lambda: (sampler(image_t), sampler.labels(labels_t)),
                                  max(3, args.repeats // 5))
        print(json.dumps({
            "nside": nside, "faces": list(faces), "npix": proj.npix, "image": [cam.width, cam.height],
            "threads": args.threads, "map_build_ms": round(build_ms, 1), "map_load_ms": round(load_ms, 1),
            "backproject_map_build_ms": round(back_ms, 1), "frame_ms": round(frame_ms, 2),
            "image_bilinear_ms": round(image_ms, 2), "labels_nearest_ms": round(labels_ms, 2),
            "torch_cpu_frame_ms": round(torch_ms, 1), "cpu": platform.processor() or platform.machine(),
            "torch": torch.__version__, "opencv": cv2.__version__,
        }), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
