"""Spherical harmonic transform benchmark: heal_swin.harmonics beside healpy and ducc0 on the CPU.

Per nside (lmax = 2 nside, full sphere): table build time and table memory of RealSHT / InverseRealSHT,
forward and backward time of both (torch, one map per call unless --batch), and healpy's map2alm
(iter=0, use_weights=False) / alm2map and ducc0's adjoint_synthesis / synthesis on the same maps, in the
same run, with the same number of threads. Medians; one JSON line per setting, a Markdown table at the end.

    OMP_NUM_THREADS=2 python bench/bench_harmonics.py [--nside 32 64 128 256] [--threads 2] [--repeats 10]
        [--dtype float64 float32] [--batch 1]
    python bench/bench_harmonics.py --memory [--nside 64 128] [--dtype float32 float64]

--memory (issue #31, item 10): the construction peak of RealSHT and InverseRealSHT (lmax = 2 nside - 1 and
3 nside - 1), each built in a fresh process with its peak RSS reset after the imports (Linux: clear_refs,
VmHWM), beside harmonics.memory_estimate's `peak` and `held` and harmonics.table_bytes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time

from _timing import median_ms


_MEMORY_CHILD = """if True:
    import json, sys, torch
    from heal_swin import harmonics
    name, nside, lmax, dtype = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), getattr(torch, sys.argv[4])
    torch.set_default_dtype(dtype)
    harmonics.RealSHT(2, 3), harmonics.InverseRealSHT(2, 3)              # the imports' and first calls' memory
    def status(key):
        return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key))
    open("/proc/self/clear_refs", "w").write("5")                          # reset the peak (VmHWM) to now
    r0 = status("VmRSS:")
    module = getattr(harmonics, name)(nside, lmax)
    peak, after = status("VmHWM:") - r0, status("VmRSS:") - r0
    est = harmonics.memory_estimate(nside, lmax, dtype=dtype, analysis=name == "RealSHT", synthesis=name != "RealSHT")
    mib = lambda b: round(b / 2 ** 20, 1)
    print(json.dumps(dict(module=name, nside=nside, lmax=lmax, dtype=sys.argv[4],
                          table_bytes_mib=mib(harmonics.table_bytes(module)), measured_peak_mib=mib(peak),
                          estimate_peak_mib=mib(est["peak"]), measured_held_mib=mib(after),
                          estimate_held_mib=mib(est["held"]), peak_over_estimate=round(peak / est["peak"], 3))))
"""


def _memory(nsides, dtypes) -> int:
    import subprocess
    import sys

    for nside in nsides:
        for lmax in (2 * nside - 1, 3 * nside - 1):
            for name in ("RealSHT", "InverseRealSHT"):
                for dtype in dtypes:
                    out = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, name, str(nside), str(lmax), dtype],
                                         capture_output=True, text=True)
                    print(out.stdout.strip() or out.stderr.strip().splitlines()[-1], flush=True)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nside", type=int, nargs="+", default=None, help="default 32 64 128 256 (--memory: 64 128)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--dtype", nargs="+", default=["float64", "float32"], choices=["float64", "float32"])
    parser.add_argument("--batch", type=int, default=1, help="maps per call (torch); healpy/ducc0 loop over them")
    parser.add_argument("--memory", action="store_true", help="construction peaks against memory_estimate")
    args = parser.parse_args(argv)
    if args.memory:
        return _memory(args.nside or [64, 128], args.dtype)
    args.nside = args.nside or [32, 64, 128, 256]

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import healpy as hp
    import numpy as np
    import torch

    from heal_swin import grid, harmonics

    try:
        import ducc0
    except ImportError:                                   # the `bench` extra
        ducc0 = None
    torch.set_num_threads(args.threads)
    print(json.dumps({"torch": torch.__version__, "healpy": hp.__version__,
                      "ducc0": getattr(ducc0, "__version__", None), "threads": args.threads,
                      "cpu": platform.processor() or platform.machine(), "batch": args.batch}))
    rows = []
    for nside in args.nside:
        lmax = 2 * nside
        npix = 12 * nside * nside
        n_alm = harmonics.alm_size(lmax)
        n_rings = 4 * nside - 1
        rng = np.random.default_rng(nside)
        x64 = rng.standard_normal((args.batch, npix))
        alm64 = rng.standard_normal((args.batch, n_alm, 2))
        alm64[:, :lmax + 1, 1] = 0
        row = {"nside": nside, "lmax": lmax, "n_alm": n_alm,
               "naive_legendre_table_mib": n_alm * n_rings * 8 / 2**20}

        t = time.perf_counter()
        sht = harmonics.RealSHT(nside, lmax).double()
        isht = harmonics.InverseRealSHT(nside, lmax).double()
        row["table_build_s"] = time.perf_counter() - t
        row["table_mib_float64"] = harmonics.table_bytes(sht) / 2**20     # per module (the inverse holds the same)
        x_ring = x64[:, grid.ring2nest(nside, np.arange(npix))]

        # correctness in the same run (float64, first map)
        with torch.no_grad():
            ours = sht(torch.from_numpy(x64[:1])).numpy()[0]
            ref = hp.map2alm(x_ring[0], lmax=lmax, iter=0, use_weights=False)
            row["map2alm_rel_err"] = float(np.abs(ours[:, 0] + 1j * ours[:, 1] - ref).max() / np.abs(ref).max())
            ours_map = isht(torch.from_numpy(alm64[:1])).numpy()[0]
            ref_map = hp.alm2map(alm64[0, :, 0] + 1j * alm64[0, :, 1], nside, lmax=lmax)
            ref_map = ref_map[grid.nest2ring(nside, np.arange(npix))]
            row["alm2map_rel_err"] = float(np.abs(ours_map - ref_map).max() / np.abs(ref_map).max())

        reps = max(3, args.repeats // (1 if nside <= 64 else 2 if nside <= 128 else 5))
        for name in args.dtype:
            dtype = getattr(torch, name)
            s, i = (sht, isht) if dtype == torch.float64 else (harmonics.RealSHT(nside, lmax).float(),
                                                                  harmonics.InverseRealSHT(nside, lmax).float())
            if dtype == torch.float32:
                row["table_mib_float32"] = harmonics.table_bytes(s) / 2**20
            x = torch.from_numpy(x64).to(dtype)
            a = torch.from_numpy(alm64).to(dtype)
            with torch.no_grad():
                row[f"sht_fwd_ms_{name}"] = median_ms(lambda: s(x), reps, 1, desc=f"nside {nside} RealSHT {name}")
                row[f"isht_fwd_ms_{name}"] = median_ms(lambda: i(a), reps, 1, desc=f"nside {nside} InverseRealSHT {name}")
            xg, ag = x.clone().requires_grad_(True), a.clone().requires_grad_(True)
            go, gi = torch.randn(x.shape[0], n_alm, 2, dtype=dtype), torch.randn_like(x)

            def fb_sht():
                xg.grad = None
                s(xg).backward(go)

            def fb_isht():
                ag.grad = None
                i(ag).backward(gi)

            row[f"sht_fwd_bwd_ms_{name}"] = median_ms(fb_sht, reps, 1, desc=f"nside {nside} RealSHT fwd+bwd {name}")
            row[f"isht_fwd_bwd_ms_{name}"] = median_ms(fb_isht, reps, 1, desc=f"nside {nside} InverseRealSHT fwd+bwd {name}")
            if s is not sht:
                del s, i

        alm_c = alm64[:, :, 0] + 1j * alm64[:, :, 1]
        row["healpy_map2alm_ms"] = median_ms(
            lambda: [hp.map2alm(m, lmax=lmax, iter=0, use_weights=False) for m in x_ring], reps, 1, desc="healpy map2alm")
        row["healpy_alm2map_ms"] = median_ms(
            lambda: [hp.alm2map(al, nside, lmax=lmax) for al in alm_c], reps, 1, desc="healpy alm2map")
        if ducc0 is not None:
            start, count, theta, shifted = grid.ring_info(nside, np.arange(1, 4 * nside))
            geom = dict(theta=theta, nphi=count.astype(np.uint64), phi0=np.where(shifted, np.pi / count, 0.0),
                        ringstart=start.astype(np.uint64), lmax=lmax, spin=0, nthreads=args.threads)
            scale = 4 * math.pi / npix
            d_alm = ducc0.sht.adjoint_synthesis(map=x_ring[:1], **geom)[0] * scale
            row["ducc0_map2alm_rel_err"] = float(np.abs(d_alm - ref).max() / np.abs(ref).max())
            row["ducc0_map2alm_ms"] = median_ms(
                lambda: [ducc0.sht.adjoint_synthesis(map=m[None], **geom) for m in x_ring], reps, 1, desc="ducc0 map2alm")
            row["ducc0_alm2map_ms"] = median_ms(
                lambda: [ducc0.sht.synthesis(alm=al[None], **geom) for al in alm_c], reps, 1, desc="ducc0 alm2map")
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) and abs(v) > 1e-3 else v) for k, v in row.items()}),
              flush=True)
        rows.append(row)
        del sht, isht

    def fmt(v):
        return "–" if v is None else f"{v:.1f}" if v >= 10 else f"{v:.2f}"

    print("\n| nside | lmax | tables f64 / f32 (MiB) | n_alm × rings f64 (MiB) | build (s) | dtype | RealSHT fwd | "
          "fwd+bwd | InverseRealSHT fwd | fwd+bwd | healpy map2alm | alm2map | ducc0 map2alm | alm2map |")
    print("|" + "---|" * 14)
    for r in rows:
        for name in args.dtype:
            print(f"| {r['nside']} | {r['lmax']} | {fmt(r['table_mib_float64'])} / {fmt(r.get('table_mib_float32'))} | "
                  f"{fmt(r['naive_legendre_table_mib'])} | {fmt(r['table_build_s'])} | {name} | "
                  f"{fmt(r[f'sht_fwd_ms_{name}'])} | {fmt(r[f'sht_fwd_bwd_ms_{name}'])} | "
                  f"{fmt(r[f'isht_fwd_ms_{name}'])} | {fmt(r[f'isht_fwd_bwd_ms_{name}'])} | "
                  f"{fmt(r['healpy_map2alm_ms'])} | {fmt(r['healpy_alm2map_ms'])} | "
                  f"{fmt(r.get('ducc0_map2alm_ms'))} | {fmt(r.get('ducc0_alm2map_ms'))} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
