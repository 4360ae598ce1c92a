"""One training step's time and memory, in one process, for `compare.py` (not a benchmark of its own).

    python step.py ours [--model s2cnn_digits] [--kw '{"shared_grid": false}']      # in the project's venv
    python step.py original --src DIR                                               # in the original's venv

Batch 4, fp32, 1 thread: forward, cross-entropy over 11 classes, backward (no optimiser step), after warm-up
steps; prints one JSON line: the step times (ms), the batch-1 forward (eval, no grad) times and the growth of
the peak resident memory over the steps (ru_maxrss after the model and data are built, then after the steps:
what training adds, autograd's saved tensors and the transforms' workspace).
`original` builds S2ConvNet_sem_seg of JanEGerken/sem_seg_s2cnn from the source folder DIR (its pure-PyTorch
path on the CPU) with the settings of the rotated-digits network: b_in 16, S2/SO(3) channels 12-24-24-12,
bandwidths 12-8-8-12, b_out 16, kernel_max_beta 1/8, no skips, on its 32 x 32 Driscoll-Healy grid. Its
`np.float` and `collections.Iterable` (gone from numpy >= 1.24 and Python >= 3.10) are put back here, before
the import; the original's code is not changed.
"""

import argparse
import json
import resource
import statistics
import sys
import time


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _ours(args):
    from heal_swin import models

    # the rotated-digits setting: nside 16, full sphere, 1 input channel, 11 classes
    kw = dict(nside=16, base_pixels=range(12), in_chans=1, num_classes=11, **json.loads(args.kw))
    model = models.create_model(args.model, **kw)
    n = len(model.faces) * model.nside ** 2
    x = torch.randn(args.batch, model.in_chans, n)
    y = torch.randint(0, model.num_classes, (args.batch, n))
    return model, x, y, x[:1]


def _original(args):
    import collections
    import collections.abc

    import numpy as np

    np.float = float                                   # removed in numpy 1.24; the original uses it
    collections.Iterable = collections.abc.Iterable    # removed in Python 3.10
    sys.path.insert(0, f"{args.src}/examples/mnist_sem_seg")
    sys.path.insert(0, args.src)
    from models import S2ConvNet_sem_seg

    model = S2ConvNet_sem_seg(b_in=16, f_in=1, fs=[12, 24, 24, 12], b_ls=[12, 8, 8, 12], b_out=16, f_out=11,
                              kernel_max_beta=0.125, use_skips=False)
    x = torch.randn(args.batch, 1, 32, 32)
    y = torch.randint(0, 11, (args.batch, 32, 32))
    return model, x, y, x[:1]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("impl", choices=["ours", "original"])
    p.add_argument("--src", help="the original's source folder (impl original)")
    p.add_argument("--model", default="s2cnn_digits")
    p.add_argument("--kw", default="{}", help="JSON keyword overrides of the model (impl ours)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model, x, y, x1 = (_ours if args.impl == "ours" else _original)(args)
    params = sum(p.numel() for p in model.parameters())
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        model.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()

    model.train()
    rss0 = _rss_mib()
    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        step()
        times.append(1e3 * (time.perf_counter() - t))
    rss1 = _rss_mib()
    model.eval()
    fwd = []
    with torch.no_grad():
        model(x1)
        for _ in range(args.steps):
            t = time.perf_counter()
            model(x1)
            fwd.append(1e3 * (time.perf_counter() - t))
    name = args.model + (f":{args.kw}" if args.kw != "{}" else "") if args.impl == "ours" else "S2ConvNet_sem_seg"
    print(json.dumps(dict(impl=args.impl, model=name, params=params, torch=torch.__version__,
                          step_ms=[round(t, 1) for t in times], step_median_ms=round(statistics.median(times), 1),
                          fwd1_ms=round(statistics.median(fwd), 1), rss_built_mib=round(rss0),
                          peak_rss_growth_mib=round(rss1 - rss0), peak_rss_mib=round(rss1))), flush=True)


if __name__ == "__main__":
    import torch

    main()
