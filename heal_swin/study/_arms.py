"""Arms of a study: what one run trains (model spec × task × overrides × seed) and how it is named.

One model-spec grammar for every study: `NAME[@HxW][:key=value,...]`
- `NAME`: a registered variant (`models.list_models()`);
- `@HxW`: the image size of a flat model on fisheye data (`data.flat_size`);
- `:key=value,...`: keyword overrides of the variant (`model.kwargs.key`; values are YAML/JSON, bare words
  strings), e.g. `heal_swin_tiny:symmetric=true`, `gauge_cnn_tiny:widths=[16,32,64]`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field

__all__ = ["Arm", "ModelSpec", "parse_model_spec", "StudyError"]


class StudyError(ValueError):
    """A study that cannot run as asked: the message names the arm or flag, the value and the rule."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    flat_size: tuple[int, int] | None = None
    kwargs: tuple[tuple[str, object], ...] = ()

    def overrides(self) -> list[str]:
        """The config overrides that build this model."""
        out = [f"model.name={self.name}"]
        if self.flat_size is not None:
            out.append(f"data.flat_size=[{self.flat_size[0]},{self.flat_size[1]}]")
        out += [f"model.kwargs.{k}={json.dumps(v).replace(' ', '')}" for k, v in self.kwargs]
        return out


def parse_model_spec(spec: str) -> ModelSpec:
    """'NAME[@HxW][:key=value,...]' -> ModelSpec; an unknown name or a bad part fails here, before any work."""
    from ..models import model_info

    head, _, rest = spec.partition(":")
    name, _, size = head.partition("@")
    try:
        info = model_info(name)
    except (KeyError, ValueError) as err:
        raise StudyError(f"model spec {spec!r}: {err}") from None
    flat_size = None
    if size:
        if info.domain != "flat":
            raise StudyError(f"model spec {spec!r}: @HxW sets a flat model's image size; {name} is a {info.domain} "
                             "model")
        m = re.fullmatch(r"(\d+)[xX](\d+)", size)
        if not m or min(int(m[1]), int(m[2])) < 8:
            raise StudyError(f"model spec {spec!r}: the size must be HxW in whole pixels >= 8, e.g. {name}@96x128")
        flat_size = (int(m[1]), int(m[2]))
    kwargs = []
    for part in filter(None, (p.strip() for p in _split_top_level(rest))):
        key, eq, value = part.partition("=")
        if not eq or not key.strip().isidentifier():
            raise StudyError(f"model spec {spec!r}: {part!r} must be key=value with a keyword name")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        kwargs.append((key.strip(), parsed))
    return ModelSpec(name, flat_size, tuple(sorted(kwargs)))


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside brackets: 'widths=[4,8],depth=2' -> ['widths=[4,8]', 'depth=2']."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch in "[{("
        depth -= ch in "]})"
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


@dataclass
class Arm:
    """One run of a study: `model` (a model spec), `task`, config `overrides` (beside the study's), `seed`
    (run.seed). `label` names the arm's group in the report (default: the model spec); `tags` are values
    the study's own report groups or plots by (e.g. {"augment": 0.5}); `evaluations` are extra evaluations
    after training, {name: [overrides]} (e.g. {"rotated": ["eval.split=test", "data.digits.eval_rotate=1"]}),
    each written to RUN_DIR/eval-<name>/."""
    model: str
    task: str = "segmentation"
    overrides: list = field(default_factory=list)
    seed: int = 0
    label: str | None = None
    tags: dict = field(default_factory=dict)
    evaluations: dict = field(default_factory=dict)

    def __post_init__(self):
        self.spec = parse_model_spec(self.model)
        for item in self.overrides:
            if "=" not in item:
                raise StudyError(f"arm {self.model}: override {item!r} must be KEY=VALUE, e.g. train.lr=1e-3")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise StudyError(f"arm {self.model}: seed={self.seed!r} must be an integer >= 0")

    @property
    def group(self) -> str:
        return self.label or self.model

    def describe(self) -> dict:
        """What the arm computes (the key of a finished run), JSON-able."""
        d = asdict(self)
        d["overrides"] = list(self.overrides)
        return d

    def run_name(self, study_overrides=()) -> str:
        """A readable directory name, with a short hash of everything the run computes, so arms of other
        settings never share (and never overwrite) a directory."""
        readable = f"{self.task}-{self.model}" + "".join(f"-{o}" for o in self.overrides) + f"-seed{self.seed}"
        readable = re.sub(r"[^A-Za-z0-9._=-]+", "-", readable).strip("-")[:120]
        key = json.dumps([self.model, self.task, sorted(self.overrides), self.seed, sorted(study_overrides),
                          sorted((k, json.dumps(v)) for k, v in self.evaluations.items())])
        return f"{readable}-{hashlib.sha1(key.encode()).hexdigest()[:6]}"
