"""S2CNN layers and models: FLOPs, parameters, time and memory; one JSON line per measurement.

    python bench/bench_s2cnn.py --layers --threads 2            # each spectral layer at b = 8, 16 (C = 16, batch 8)
    python bench/bench_s2cnn.py --flops --nside 16 32 64         # forward FLOPs / parameters of the models
    python bench/bench_s2cnn.py --rates --threads 1              # GFLOP/s of the transforms beside a plain matmul

Layers: forward and forward+backward time (median of --repeats after a warm-up), FLOPs of one forward
(`torch.utils.flop_counter`: 2 per multiply-add of matmuls; counted on a second eval call, so the kernel
spectra are already folded, as in inference), the MiB of the layer's tables (Wigner-d,
kernel bases) and of its output. Models: forward FLOPs and parameters at each nside (batch 1); time and
peak memory of whole models come from bench/bench_models.py (one subprocess per model).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from _timing import median_ms

from heal_swin import harmonics, models
from heal_swin.models.s2cnn import S2Conv, SO3Activation, SO3Conv, SO3ToS2Conv


def _mib(tensors) -> float:
    return round(sum(t.numel() * t.element_size() for t in tensors) / 2 ** 20, 2)


def _flops(fn) -> float:
    """FLOPs of one call after a first one (eval mode folds the kernel spectra on the first call)."""
    with torch.no_grad():
        fn()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops()


def _median(fn, repeats: int) -> float:
    """Median seconds after one warm-up call."""
    return median_ms(fn, repeats, warmup=1) / 1e3


def bench_layers(bandwidths, channels: int, batch: int, repeats: int):
    for b in bandwidths:
        a = torch.randn(batch, channels, harmonics.alm_size(b - 1), 2)
        g = torch.randn(batch, channels, b, b, 2 * b - 1, 2)
        layers = {"S2Conv": (S2Conv(channels, channels, b, b), a), "SO3Conv": (SO3Conv(channels, channels, b, b), g),
                  "SO3ToS2Conv": (SO3ToS2Conv(channels, channels, b, b), g),
                  "SO3Activation": (SO3Activation(channels, b), g),
                  "SO3Synthesis": (harmonics.SO3Synthesis(b), g), }
        for name, (layer, x) in layers.items():

            def fwd_bwd():
                xx = x.detach().requires_grad_(True)
                layer(xx).square().mean().backward()

            layer.eval()                               # inference: kernel spectra folded on the first call
            with torch.no_grad():
                out = layer(x)
                fwd = _median(lambda: layer(x), repeats)
            gflops = _flops(lambda: layer(x))
            layer.train()                              # training: spectra rebuilt from the weights each call
            row = dict(layer=name, b=b, channels=channels, batch=batch, threads=torch.get_num_threads(),
                       params=sum(p.numel() for p in layer.parameters()), gflops_fwd=round(gflops / 1e9, 3),
                       fwd_s=round(fwd, 4), fwd_bwd_s=round(_median(fwd_bwd, repeats), 4),
                       tables_mib=_mib(layer.buffers()), output_mib=_mib([out]))
            print(json.dumps(row), flush=True)


def _median_cpu_ms(fn, repeats: int, warmup: int = 2) -> float:
    """Median CPU time of the calling thread per `fn()` call, ms: on a machine whose cores other jobs share,
    the time the thread waited for a core is left out (not the slowdown of shared caches and memory)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.thread_time()
        fn()
        times.append(time.thread_time() - t)
    return 1e3 * statistics.median(times)


def bench_rates(maps: int, repeats: int):
    """The machine's matmul rate (fp32, a 1024^3 product and one of the ring stage's shapes) and, in the same
    run, the GFLOP/s of the SO(3) activation (synthesis, GroupNorm, ReLU, analysis; forward, no grad) at the
    s2cnn_digits grids and of the SHT pair, `maps` maps per call (FLOPs by torch.utils.flop_counter). Each
    case by the wall clock (`ms`, `gflop_s`, `of_gemm`) and by the thread's CPU time (`cpu_ms`,
    `cpu_of_gemm`: the matmul's rate by the same clock), the latter for machines where other jobs share the
    cores (`os.getloadavg()` is printed first)."""

    def row(name, fn, flops=None):
        flops = _flops(fn) if flops is None else flops
        ms, cpu_ms = median_ms(fn, repeats, warmup=2), _median_cpu_ms(fn, repeats)
        gflops, cpu_gflops = flops / ms / 1e6, flops / cpu_ms / 1e6
        out = dict(case=name, threads=torch.get_num_threads(), mflop=round(flops / 1e6, 1), ms=round(ms, 3),
                   gflop_s=round(gflops, 1), cpu_ms=round(cpu_ms, 3))
        if gemm:
            out["of_gemm"] = f"{100 * gflops / gemm[0][0]:.0f} %"
            out["cpu_of_gemm"] = f"{100 * cpu_gflops / gemm[0][1]:.0f} %"
        print(json.dumps(out), flush=True)
        return gflops, cpu_gflops

    print(json.dumps(dict(loadavg=[round(x, 2) for x in os.getloadavg()], cpus=os.cpu_count())), flush=True)

    gemm = []
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    gemm.append(row("matmul 1024x1024x1024", lambda: a @ b, 2 * 1024 ** 3))
    x, w = torch.randn(31, 1152, 24), torch.randn(31, 24, 32)
    row("bmm 31 x (1152x24 @ 24x32)", lambda: torch.bmm(x, w), 2 * 31 * 1152 * 24 * 32)
    cases = [(8, 24, (8, 16)), (12, 12, None), (16, 16, None)]     # (b, channels, grid): the digits' and the hybrids'
    for b, c, grid in cases:
        act = SO3Activation(c, b, grid=grid).eval()
        g = torch.randn(max(1, maps // c), c, b, b, 2 * b - 1, 2)
        with torch.no_grad():
            row(f"SO3Activation b={b} grid={act.synthesis.nside}x{act.synthesis.n_gamma}, {g.shape[0] * c} maps",
                lambda: act(g))
    for nside, lmax in [(16, 15), (32, 31), (64, 63)]:
        sht, isht = harmonics.RealSHT(nside, lmax), harmonics.InverseRealSHT(nside, lmax)
        x = torch.randn(maps, 12 * nside ** 2)
        with torch.no_grad():
            alm = sht(x)
            row(f"RealSHT nside={nside} lmax={lmax}, {maps} maps", lambda: sht(x))
            row(f"InverseRealSHT nside={nside} lmax={lmax}, {maps} maps", lambda: isht(alm))
    print(json.dumps(dict(loadavg=[round(x, 2) for x in os.getloadavg()])), flush=True)


def bench_flops(nsides):
    cases = [("s2cnn_digits", dict(base_pixels=range(12), in_chans=1)), ("s2cnn_tiny", dict(base_pixels=range(8))),
             ("s2cnn_small", dict(base_pixels=range(8))), ("gauge_cnn_tiny", dict(base_pixels=range(8))),
             ("heal_swin_tiny", dict(base_pixels=range(8)))]
    for nside in nsides:
        for name, kw in cases:
            try:
                model = models.create_model(name, nside=nside, **kw).eval()
            except ValueError as err:                   # e.g. too many stages for a small nside
                print(json.dumps(dict(model=name, nside=nside, skipped=str(err)[:120])), flush=True)
                continue
            x = torch.randn(1, model.in_chans, len(model.faces) * nside ** 2)
            print(json.dumps(dict(model=name, nside=nside, faces=len(model.faces),
                                  params=sum(p.numel() for p in model.parameters()),
                                  gflops_fwd=round(_flops(lambda: model(x)) / 1e9, 3))), flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", action="store_true")
    p.add_argument("--flops", action="store_true")
    p.add_argument("--rates", action="store_true", help="GFLOP/s of the transforms beside a plain matmul")
    p.add_argument("--maps", type=int, default=96, help="maps per call for --rates")
    p.add_argument("--bandwidths", type=int, nargs="+", default=[8, 16])
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--nside", type=int, nargs="+", default=[16, 32, 64])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not (args.layers or args.flops or args.rates):
        p.error("choose --layers, --flops and/or --rates")
    if args.rates:
        bench_rates(args.maps, max(args.repeats, 5))
    if args.layers:
        bench_layers(args.bandwidths, args.channels, args.batch, args.repeats)
    if args.flops:
        bench_flops(args.nside)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
