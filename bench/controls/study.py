"""The paper's controls beside the gauge CNN (issue #26): does each non-equivariant control learn the digits,
per step, as well as the equivariant model it controls, on both tasks?

    heal-swin-study bench/controls/study.py --out runs/controls                   # 20 runs, about 30 min, 1 core
    heal-swin-study bench/controls/study.py --models gauge_cnn_tiny chart_cnn_tiny --tasks classification

Data: the rotated-digits spheres (configs/digits_gauge_cnn.yaml: nside 16, full sphere, 400 training
spheres, 100 held-out), upright training data (no augmentation: the question here is whether a control
learns at all, and how fast per step). Segmentation: 3-5 digits per sphere, 11 classes, 400 steps.
Classification: one digit per sphere, 10 classes (`task=classification`), 300 steps. One recipe for every
model (the gauge CNN's: AdamW, one-cycle at lr 3e-3, batch 4), --evals evaluations per run (the learning
curve, curves.png), then the held-out test spheres upright and fully rotated (eval-upright/, eval-rotated/).
Default models: the gauge CNN, the chart CNN at its parameter count and at its FLOPs (4x), the planar CNN at
1x and 4x its parameters.
"""

from heal_swin.study import Arm, Study, StudyError

MODELS = ("gauge_cnn_tiny", "chart_cnn_tiny", "chart_cnn_tiny_4x", "planar_cnn_1x", "planar_cnn_4x")
STEPS = {"segmentation": 400, "classification": 300}
TASK = {"segmentation": [], "classification": ["data.digits.digits=[1,1]", "train.metric=accuracy"]}
EVALUATIONS = {"upright": ["eval.split=test", "data.digits.eval_rotate=0.0"],
               "rotated": ["eval.split=test", "data.digits.eval_rotate=1.0"]}


def add_arguments(group) -> None:
    group.add_argument("--evals", type=int, default=8, help="evaluations per run (the learning curve)")


def make(options) -> Study:
    tasks = options.tasks or list(STEPS)
    unknown = sorted(set(tasks) - set(STEPS))
    if unknown or options.evals < 1:
        raise StudyError(f"--tasks {unknown}: choose from {list(STEPS)}; --evals {options.evals} must be >= 1")
    arms = []
    for task in tasks:
        steps = options.steps or STEPS[task]
        budget = [f"train.max_steps={steps}", f"train.eval_every={max(1, steps // options.evals)}", "train.lr=3e-3"]
        arms += [Arm(model, task, [*TASK[task], *budget], seed, evaluations=EVALUATIONS)
                 for model in options.models or MODELS for seed in range(options.seeds or 2)]
    overrides = ["data.nside=32", "data.digits.train=1600"] if options.full else []
    return Study("controls", "configs/digits_gauge_cnn.yaml", arms, overrides=overrides)
