"""The learning study (issues #5, #17): backbones on the sphere against the flat Swin-UNet, the same step
budget and data (synthetic WoodScape-format frames), scored on the same fisheye pixels (those the sphere
models' faces cover), for segmentation and depth, over seeds, with learning curves.

    heal-swin-study bench/learning/study.py --out runs/learning --workers 2      # the default: 28 min, 2 cores
    heal-swin-study bench/learning/study.py --models heal_swin_tiny swin_unet_flat_tiny@96x128 --seeds 2 \\
        --set train.lr=1e-3 --out runs/learning_lr1e-3
    heal-swin-study --merge runs/learning runs/learning_lr1e-3 --out runs/learning_merged
    heal-swin-study bench/learning/study.py --data runs/learning/data --models gauge_cnn_tiny --steps 900 --evals 9 \
        --out runs/learning_900                         # another arm on the same data

Default: heal_swin_tiny, swin_unet_flat_tiny, gauge_cnn_tiny and s2cnn_tiny; both tasks; 3 seeds
(run.seed: model init and data order; the data are the same); 300 steps with 6 evaluations; 24 frames.
Sphere models train at the demo's nside 32 on faces 0-7; flat ones on a 64 x 96 image (about as many
pixels as the sphere models see: matched token counts); NAME@HxW sets another flat size. --full: the
paper's setting for a GPU (nside 256, a 512 x 1024 flat image, 1280 x 966 frames, 200 frames, 20k steps; 8
loader processes: loading a batch of these frames in the training process would take longer than the GPU's
step, bench/gpu/ESTIMATE.md).
"""

from heal_swin.study import Arm, Study, StudyError, parse_model_spec, synthetic_tree

MODELS = ("heal_swin_tiny", "swin_unet_flat_tiny", "gauge_cnn_tiny", "s2cnn_tiny")
FULL = dict(nside=256, flat_size=(512, 1024), size=(1280, 966), frames=200, steps=20000)
DEPTH = ["train.metric=abs_rel", "train.metric_mode=min", "loss.depth=silog", "data.max_depth=100"]


def _grid(model: str, full: bool) -> list:
    """The input grid of a model spec: flat models 64 x 96 (matched tokens) unless @HxW says otherwise."""
    spec = parse_model_spec(model)
    from heal_swin.models import model_info

    if model_info(spec.name).domain == "flat":
        if spec.flat_size is not None:
            return []                                     # the spec's own size
        h, w = FULL["flat_size"] if full else (64, 96)
        return [f"data.flat_size=[{h},{w}]"]
    return [f"data.nside={FULL['nside']}"] if full else []


def add_arguments(group) -> None:
    group.add_argument("--evals", type=int, default=6, help="evaluations per run (the learning curve)")
    group.add_argument("--frames", type=int, default=None, help="synthetic frames (default 24; --full: 200)")
    group.add_argument("--data", default=None, help="the synthetic tree (default OUT/data; generated when empty)")


def make(options) -> Study:
    steps = options.steps or (FULL["steps"] if options.full else 300)
    frames = options.frames or (FULL["frames"] if options.full else 24)
    evals = options.evals
    if evals < 1 or frames < 1:
        raise StudyError(f"--evals {evals} and --frames {frames} must be >= 1")
    arms = [Arm(model, task, [*_grid(model, options.full), *(DEPTH if task == "depth" else [])], seed)
            for task in options.tasks or ("segmentation", "depth")
            for model in options.models or MODELS
            for seed in range(options.seeds or 3)]

    prepare = synthetic_tree(frames, size=FULL["size"] if options.full else (640, 483), root=options.data,
                             overrides=options.set)
    return Study("learning", "configs/demo.yaml", arms, prepare=prepare,
                 overrides=["data.generate=false", f"train.max_steps={steps}", f"train.eval_every={max(1, steps // evals)}",
                            "data.split_fractions=[0.75,0.25,0.0]",
                            *(["run.device=cuda", "data.num_workers=8"] if options.full else [])])
