"""The common report of a study: a table (mean ± std over seeds per group, the second metric, the
fisheye metric per ring of incidence angle, the extra evaluations), IoU per class, and a figure of the
learning curves (and the per-ring bars where there are rings).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..cameras import INCIDENCE_RINGS, ring_label
from ..engine import headline

__all__ = ["write_report", "METRICS", "curve", "group_labels", "plot_by_tag"]

# task -> ((key, label) of the headline metric, (key, label) of the second one)
METRICS = {"segmentation": (("miou", "mIoU ↑"), ("accuracy", "accuracy ↑")),
           "depth": (("abs_rel", "AbsRel ↓"), ("d1", "δ<1.25 ↑")),
           "classification": (("accuracy", "accuracy ↑"), ("balanced_accuracy", "balanced accuracy ↑"))}
# overrides that say where or how a run executes, not what it computes: never part of a group's name
_PLUMBING = ("run.", "data.root", "data.generate", "data.num_workers", "train.resume")


def curve(run_dir, key: str) -> tuple[list, list]:
    """(steps, headline metric) of a run's evaluations during training, from its metrics.jsonl."""
    steps, values = [], []
    path = Path(run_dir) / "metrics.jsonl"
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        value = headline(row.get("eval", {}), key) if "eval" in row else None
        if value is not None:
            steps.append(row["step"])
            values.append(value)
    return steps, values


def _settings(row: dict) -> list[str]:
    over = [*row.get("study_overrides", []), *row["arm"].get("overrides", [])]
    return sorted({o for o in over if not o.startswith(_PLUMBING)})


def group_labels(rows: list) -> list[str]:
    """Each row's group name: its arm's label, with the settings that not every row of the same task and
    label shares (an lr sweep of one model shows its rates; two models' own budgets do not)."""
    by_group: dict = {}
    for r in rows:
        by_group.setdefault((r["task"], r["group"]), []).append(set(_settings(r)))
    shared = {key: set.intersection(*s) for key, s in by_group.items()}
    labels = []
    for r in rows:
        own = [o.removeprefix("model.kwargs.") for o in _settings(r) if o not in shared[(r["task"], r["group"])]]
        labels.append(f"{r['group']} ({', '.join(own)})" if own else r["group"])
    return labels


def _groups(rows: list) -> dict:
    groups: dict = {}
    for r, label in zip(rows, group_labels(rows)):
        groups.setdefault((r["task"], label), []).append(r)
    return groups


def _mean_std(values) -> str:
    v = np.array([x for x in values if x is not None], dtype=float)
    return f"{v.mean():.3f} ± {v.std():.3f}" if v.size else "–"


def _table(groups: dict) -> list[str]:
    rings = sorted({k for rs in groups.values() for r in rs for k in r["result"].get("fisheye_rings", {})},
                   key=list(INCIDENCE_RINGS).index)
    evals = sorted({k for rs in groups.values() for r in rs for k in r.get("evaluations", {})})
    head = (["task", "model", "grid", "parameters", "seeds", "steps", "metric (mean ± std)", "second metric"]
            + [f"θ {ring_label(k)}" for k in rings] + [f"eval `{e}`" for e in evals] + ["train time"])
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for (task, label), rs in sorted(groups.items()):
        (key, name), (key2, name2) = METRICS[task]
        cells = [task, label, rs[0]["grid"], f"{rs[0]['params']:,}", str(len(rs)),
                 str(sorted({r["steps"] for r in rs})[0]),
                 f"{name[:-2]} {_mean_std(headline(r['result'], key) for r in rs)}",
                 f"{name2[:-2]} {_mean_std(headline(r['result'], key2) for r in rs)}"]
        cells += [_mean_std(r["result"].get("fisheye_rings", {}).get(k, {}).get(key) for r in rs) for k in rings]
        cells += [_mean_std(headline(r.get("evaluations", {}).get(e, {}), key) for r in rs) for e in evals]
        cells.append(f"{np.mean([r['train_seconds'] for r in rs]):.0f} s")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "std: over seeds (population). Metric: in the fisheye image where the run was scored there, else "
              "on the sphere (or the flat grid). Rings: incidence angle θ of the fisheye pixel from the optical axis."]
    seg = {label: rs for (task, label), rs in sorted(groups.items()) if task == "segmentation"}
    iou = {label: [headline(r["result"], "iou") for r in rs] for label, rs in seg.items()}
    iou = {label: v for label, v in iou.items() if all(v)}
    if iou:                                   # which classes each model has learned at all
        classes = list(next(iter(iou.values()))[0])
        lines += ["", "Segmentation, IoU per class (mean over seeds; – : absent from labels and predictions):", "",
                  "| model | " + " | ".join(classes) + " |", "|---" * (1 + len(classes)) + "|"]
        for label, per_run in iou.items():
            cells = [[v for d in per_run if (v := d.get(c)) is not None] for c in classes]
            lines.append(f"| {label} | " + " | ".join(f"{np.mean(v):.3f}" if v else "–" for v in cells) + " |")
    return lines


def _figure(groups: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({t for t, _ in groups})
    names = sorted({m for _, m in groups})
    has_rings = any(r["result"].get("fisheye_rings") for rs in groups.values() for r in rs)
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    color = {m: cmap(i % cmap.N) for i, m in enumerate(names)}      # one colour per group in every panel
    many = len(names) > 6                     # then one legend beside the panels, not over the data
    nrows = 2 if has_rings else 1
    fig, axes = plt.subplots(nrows, len(tasks), figsize=(6.5 * len(tasks) + (3.2 if many else 0), 4.2 * nrows),
                             squeeze=False)
    for ax, task in zip(axes[0], tasks):
        key, name = METRICS[task][0]
        for (t, label), rs in sorted(groups.items()):
            if t != task:
                continue
            curves = [curve(r["run_dir"], key) for r in rs]
            n = min(len(c[0]) for c in curves)
            if n == 0:
                continue
            vals = np.array([c[1][:n] for c in curves])
            ax.plot(curves[0][0][:n], vals.mean(0), marker="o", markersize=3, color=color[label],
                    label=f"{label} ({len(rs)} seeds)")
            ax.fill_between(curves[0][0][:n], vals.min(0), vals.max(0), color=color[label], alpha=0.2)
        ax.set_xlabel("step")
        ax.set_ylabel(f"validation {name}")
        ax.set_title(task)
        ax.grid(alpha=0.3)
        if task == "depth":
            ax.set_yscale("log")              # early depth errors are many times the final ones
        if not many:
            ax.legend(fontsize=7)
    if has_rings:
        rings = list(INCIDENCE_RINGS)
        for ax, task in zip(axes[1], tasks):
            key, name = METRICS[task][0]
            labels = [label for t, label in sorted(groups) if t == task]
            width = 0.8 / max(1, len(labels))
            for i, label in enumerate(labels):
                vals = np.array([[r["result"].get("fisheye_rings", {}).get(k, {}).get(key, np.nan) for k in rings]
                                 for r in groups[(task, label)]], dtype=float)
                ax.bar(np.arange(len(rings)) + (i - (len(labels) - 1) / 2) * width, np.nanmean(vals, 0), width,
                       yerr=np.nanstd(vals, 0), capsize=2, label=label, color=color[label])
            ax.set_xticks(np.arange(len(rings)), [f"θ {ring_label(k)}" for k in rings])
            ax.set_ylabel(f"fisheye {name} (final, mean ± std)")
            ax.set_title(f"{task}: per ring of incidence angle")
            ax.grid(alpha=0.3, axis="y")
    fig.suptitle("Learning curves: mean over seeds, band = min–max", fontsize=10)
    if many:
        handles = [plt.Rectangle((0, 0), 1, 1, color=color[m]) for m in names]
        fig.legend(handles, names, loc="center right", fontsize=8, frameon=False)
        fig.tight_layout(rect=(0, 0, 1 - 3.2 / fig.get_figwidth(), 1))
    else:
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_by_tag(rows: list, tag: str, path, evaluation: str | None = None, title: str = "", xlabel: str = "",
                dashed=()) -> None:
    """A PNG of the headline metric (of the extra `evaluation`, else the final one) against the value of a
    tag (e.g. the augmentation level), mean ± std over seeds, one line per arm label (`dashed`: labels
    drawn dashed, e.g. the equivariant models)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    key, name = METRICS[rows[0]["task"]][0]
    for label in sorted({r["group"] for r in rows}):
        values: dict = {}
        for r in rows:
            if r["group"] == label and tag in r.get("tags", {}):
                result = r["evaluations"][evaluation] if evaluation else r["result"]
                values.setdefault(r["tags"][tag], []).append(headline(result, key))
        xs = sorted(values)
        ax.errorbar(xs, [np.mean(values[x]) for x in xs], yerr=[np.std(values[x]) for x in xs], marker="o",
                    capsize=3, label=label, linestyle="--" if label in dashed else "-")
    ax.set_xlabel(xlabel or tag)
    ax.set_ylabel(f"{name} ({evaluation or 'final evaluation'})")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(out, rows: list) -> str:
    """OUT/results.md and OUT/curves.png of `rows`; returns the Markdown."""
    from ..engine import atomic_write_text

    out = Path(out)
    if not rows:
        text = "No finished runs yet.\n"
        atomic_write_text(out / "results.md", text)
        return text
    groups = _groups(rows)
    text = "\n".join(_table(groups)) + "\n"
    atomic_write_text(out / "results.md", text)
    _figure(groups, out / "curves.png")
    return text
