"""Studies: experiments as data. A study is a list of arms (model spec × task × config overrides × seed);
each arm trains through the engine (`heal_swin.engine.main`) into an ordinary run directory, finished runs
are kept, interrupted ones resume, and one report (mean ± std over seeds, curves, per ring and per class)
covers them all.

    from heal_swin.study import Arm, Study, run_study
    study = Study("lr sweep", "configs/demo.yaml",
                  [Arm("heal_swin_tiny", overrides=[f"train.lr={lr}"], seed=s) for lr in (1e-3, 2e-3) for s in (0, 1)])
    rows = run_study(study, "runs/sweep", workers=2)       # OUT/runs/<arm>/, OUT/results.{jsonl,md}, OUT/curves.png

`heal-swin-study FILE.py [--out DIR] [--models ...] [--seeds N] ...` runs a study file (a Python file with
`make(options) -> Study`); `heal-swin-study --merge DIR [DIR ...] --out DIR` reports several as one.
"""

from ._arms import Arm, ModelSpec, StudyError, parse_model_spec
from ._report import METRICS, curve, group_labels, plot_by_tag, write_report
from ._runner import RESULTS, STUDY_FILE, Study, collect_rows, merge, read_rows, run_study, synthetic_tree

__all__ = ["Arm", "METRICS", "ModelSpec", "RESULTS", "STUDY_FILE", "Study", "StudyError", "collect_rows", "curve",
           "group_labels", "merge", "parse_model_spec", "plot_by_tag", "read_rows", "run_study", "synthetic_tree",
           "write_report"]
