"""Error maps of issue #17 on a pair trained with the learning study's settings (heal_swin_tiny, nside 32;
swin_unet_flat_tiny, 64×96; seed 0; 24 frames; --steps, default 150); its report adds OUT/error_maps.{png,md}
    heal-swin-study bench/learning/error_maps.py --out runs/error_maps [--steps 150] [--workers 2]
                    [--set data.root=runs/learning/data]             # default data: OUT/data, generated
Runs trained already: python -m heal_swin.tools.diagnosis errors --sphere RUN --flat RUN"""
from heal_swin.study import Arm, Study, synthetic_tree
from heal_swin.tools.diagnosis import error_maps

MODELS = ("heal_swin_tiny", "swin_unet_flat_tiny@64x96")


def make(options) -> Study:
    prepare = synthetic_tree(24, overrides=options.set)

    def report(out, rows):
        runs = {row["model"]: row["run_dir"] for row in rows}
        error_maps(runs[MODELS[0]], runs[MODELS[1]], out / "error_maps.png")

    steps = options.steps or 150
    return Study("error maps", "configs/demo.yaml", [Arm(m) for m in MODELS], prepare=prepare, report=report,
                 overrides=["data.generate=false", "data.split_fractions=[0.75,0.25,0.0]",
                            f"train.max_steps={steps}", f"train.eval_every={max(1, steps // 6)}"])
