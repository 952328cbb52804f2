"""Accuracy, attacks over a dataset, eps sweeps, minimal budgets and cross-backend agreement."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..attacks.base import Attack
from ..attacks.reference import gradient_sign_and_logits
from ..core.checks import check_images, check_labels, inspect_model, model_device, parse_eps, preserved_state
from ..core.distributed import gather, sum_counts, world
from ..core.stages import Stage, log
from ..modelling.batches import indexed_batches
from ..modelling.data import as_image_set
from ..registry import ATTACKS, attack_class
from .checks.attack import budget_units, monotone_in_eps
from .checks.base import Check, warn_problems
from .checks.contract import model_learned, output_head
from .predictions import _outputs, _predict, _rate, predict


def _indexed_batches(
    model: nn.Module,
    x: Any,
    y: torch.Tensor | None,
    batch_size: int,
    target: torch.Tensor | None = None,
    rank: int = 0,
    world: int = 1,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]]:
    """Validated ``(images, labels, targets, index)`` batches of this rank's part of the data.

    ``index`` holds each example's position in the whole data (`indexed_batches`); the model's
    class count is probed once, on the first batch; one batch is in memory at a time. Yields
    nothing when this rank's part is empty: callers check the total.
    """
    if target is not None and not isinstance(x, torch.Tensor):
        raise TypeError("target= needs images as a tensor x (one target per row of x)")
    if target is not None:
        check_labels(target, len(target), name="target")
        if len(target) != len(x):
            raise ValueError(f"target has {len(target)} labels for {len(x)} images; pass one target per image")
    num_classes = None
    for xb, yb, ib in indexed_batches(x, y, batch_size, rank, world):
        check_images(xb)
        if num_classes is None:
            num_classes = inspect_model(model, xb)
        check_labels(yb, len(xb), num_classes)
        tb = None
        if target is not None:
            tb = target[ib.to(target.device)]
            check_labels(tb, len(xb), num_classes, name="target")
        yield xb, yb, tb, ib


def _nonempty(counts: dict[str, int]) -> dict[str, int]:
    if counts["total"] == 0:
        raise ValueError("the data is empty; pass at least one image")
    return counts


def accuracy(
    model: nn.Module, x: Any, y: torch.Tensor | None = None, batch_size: int = 512, *, distributed: bool = True
) -> float:
    """Fraction of the images the model classifies correctly.

    ``x`` is a tensor of images (with labels ``y``), an ImageSet, or a Dataset/DataLoader of
    ``(image, label)`` pairs, streamed in batches. Inside an initialised torch.distributed
    process group each rank classifies its share (`robustkit.core.distributed`) and every rank
    returns the accuracy over all the data; ``distributed=False`` evaluates just the data given.
    """
    rank, size = world(distributed)

    def local() -> dict[str, int]:
        hits = total = 0
        for xb, yb, _, _ in _indexed_batches(model, x, y, batch_size, rank=rank, world=size):
            hits += int((_predict(model, xb, batch_size) == yb.cpu()).sum())
            total += len(xb)
        return {"hits": hits, "total": total}

    counts = _nonempty(sum_counts(local, size))
    return counts["hits"] / counts["total"]


def random_targets(y: torch.Tensor, num_classes: int, seed: int = 0) -> torch.Tensor:
    """A random class other than ``y`` for every label (for targeted attacks)."""
    generator = torch.Generator().manual_seed(seed)
    shift = torch.randint(1, num_classes, y.shape, generator=generator)
    return (y.cpu() + shift) % num_classes


def robust_accuracy(
    attack: Attack | Sequence[Attack],
    model: nn.Module,
    x: Any,
    y: torch.Tensor | None = None,
    target: torch.Tensor | None = None,
    batch_size: int = 256,
    eval_model: nn.Module | None = None,
    *,
    early_stop: bool = True,
    distributed: bool = True,
    state: str | Path | None = None,
    keep_survivors: bool = False,
    assume_correct: bool = False,
) -> dict[str, float]:
    """Accuracy under ``attack`` (and, when targeted, the rate of reaching the target).

    ``x`` is a tensor (with ``y``), an ImageSet or a Dataset/DataLoader, streamed in batches:
    adversarial images are never all held at once. ``eval_model`` (default: ``model``)
    classifies the adversarial images: pass a defended model here and its bare classifier
    as ``model`` for an oblivious evaluation.

    ``attack`` may be a sequence of attacks (as in AutoAttack, Croce & Hein 2020): an image
    counts as robust only if it is classified correctly under every one of them. With
    ``early_stop`` (the default) one clean forward pass comes first, a misclassified image
    counts as wrong without being attacked, and each attack runs only on the images that
    survived the previous ones; targeted, an attack runs on the images not yet classified as
    their target, and an image counts as reaching it if the clean image or any attack's output
    does. The images to attack are pooled across data batches and attacked ``batch_size`` at a
    time, so attacks run on full batches. ``early_stop=False`` runs every attack on every image
    and counts the images whose adversarial versions are all classified correctly (no clean
    pass). The two agree whenever no attack turns a misclassified image into a correct one and
    the attack of an image does not depend on its batch (for random starts, use an attack with
    ``per_example_seeds`` such as the reference PGD).

    An attack that is a suite (it has ``components()``, as the official AutoAttack does) runs as
    its sequence of component attacks, so early stopping pools the survivors of each component
    and the result's ``log`` gives the accuracy after each one, as the authors' log prints it.

    Inside an initialised torch.distributed process group each rank attacks its share of the
    data (examples rank, rank + W, …, with their global indices) and every rank returns the
    totals; ``distributed=False`` evaluates just the data given.

    ``state`` (early stopping only): a file that records every attacked batch's outcome as it
    finishes. Called again with the same file after an interruption, the recorded batches are
    read back instead of attacked, so the run continues where it stopped with the same result
    (the batches form again in the same order). The file fingerprints the model's weights, the attacks
    and each batch's images: another model, attack, seed or data is refused, naming what differs. Under
    torch.distributed each rank keeps its own file (``NAME.rankR.jsonl``).

    Returns ``accuracy``; ``target_rate`` when targeted; ``clean_accuracy`` with early
    stopping; ``attacked``, the number of images attacked, summed over the attacks (``resumed``:
    the number read back from ``state`` instead). ``keep_survivors`` (untargeted, early stopping):
    the result's ``survivors`` holds the global indices of the images robust after every attack,
    sorted (gathered over the ranks), for the adaptive evaluation (`robustkit.evaluate.adaptive`).
    ``assume_correct`` (early stopping): the images are known to be classified correctly (an earlier
    attack's survivors), so there is no clean pass: every image is attacked, and a randomised model
    is not judged on one more draw of its clean images.
    """
    attacks, labels = _expand(attack)
    if target is not None:
        for a in attacks:
            if not a.targeted:
                raise ValueError(f"{a.label()} has no targeted mode; drop target= or use a targeted attack")
    if state is not None and not early_stop:
        raise ValueError("state= records early stopping's batches; drop state= or keep early_stop=True")
    if (keep_survivors or assume_correct) and (not early_stop or target is not None):
        raise ValueError("keep_survivors= and assume_correct= need an untargeted attack with early_stop=True")
    judge = eval_model or model
    rank, size = world(distributed)

    first: list[torch.Tensor] = []  # the judge's outputs on this rank's first batch, for output_head
    shape: list[tuple[int, ...]] = []  # the images' C×H×W, for budget_units
    names = labels  # for the log lines (local() below reuses the name labels)
    kept: list[torch.Tensor] = []  # this rank's survivors' global indices (keep_survivors)

    def local() -> dict[str, int]:
        counts = dict.fromkeys(("total", "clean", "robust", "reached", "attacked", "resumed"), 0)
        counts.update({f"after_{s}": 0 for s in range(len(attacks))})
        models = [model] if judge is model else [model, judge]
        record = None if state is None else _State(_rank_path(Path(state), rank, size), models, attacks, target is not None)
        pipeline = _Survivors(attacks, model, judge, batch_size, counts, record, names, _share(x, rank, size), kept)
        for xb, yb, tb, ib in _indexed_batches(model, x, y, batch_size, target, rank, size):
            labels = yb.cpu()
            if not first:  # one forward pass gives output_head its outputs and the clean pass its predictions
                first.append(_outputs(judge, xb, batch_size))
                shape.append(tuple(xb.shape[1:]))
            counts["total"] += len(xb)
            if early_stop:
                clean = first[0].argmax(1) if counts["total"] == len(xb) else _predict(judge, xb)
                robust = clean == labels if not assume_correct else torch.ones(len(xb), dtype=torch.bool)
                counts["clean"] += int(robust.sum())
                rows = _Rows(xb, yb, tb, ib, robust)
                if tb is None:
                    pipeline.add(rows.select(robust))
                else:  # targeted: an image already at its target is done
                    reached = clean == tb.cpu()
                    counts["reached"] += int(reached.sum())
                    pipeline.add(rows.select(~reached))
                continue
            robust = torch.ones(len(xb), dtype=torch.bool)
            reached = torch.zeros(len(xb), dtype=torch.bool)
            for stage, a in enumerate(attacks):
                preds = _predict(judge, a(model, xb, yb, target=tb, index=ib))
                robust &= preds == labels
                if tb is not None:
                    reached |= preds == tb.cpu()
                counts["attacked"] += len(xb)
                counts[f"after_{stage}"] += int(robust.sum())
            counts["robust"] += int(robust.sum())
            counts["reached"] += int(reached.sum())
        pipeline.finish()
        if record is not None:
            record.close()
        return counts

    counts = _nonempty(sum_counts(local, size))
    n = counts["total"]
    out = {"accuracy": counts["robust"] / n}
    survivors = None
    if keep_survivors:
        parts = gather(lambda: torch.cat(kept).tolist() if kept else [], size)
        survivors = sorted(i for part in parts for i in part)
    if target is not None:
        out["target_rate"] = counts["reached"] / n
    if early_stop:
        out["clean_accuracy"] = counts["clean"] / n
    out["attacked"] = counts["attacked"]
    if state is not None:
        out["resumed"] = counts["resumed"]
    result = RobustAccuracy(out)
    result.survivors = survivors
    if target is None:  # targeted, an image leaves the pipeline at its target, so "after" is not an accuracy
        result.log = [{"attack": lab, "accuracy": counts[f"after_{s}"] / n} for s, lab in enumerate(labels)]
    if first:
        result.checks.append(output_head(first[0]))
    if early_stop:
        result.checks.append(model_learned(out["clean_accuracy"], first[0].shape[1] if first else 2, n))
    budgets = {(a.norm, a.eps) for a in attacks if a.bounded and a.eps}
    result.checks += [budget_units(eps, norm, shape[0]) for norm, eps in sorted(budgets) if shape]
    warn_problems(result.checks)
    return result


class RobustAccuracy(dict):
    """`robust_accuracy`'s numbers (a dict, as before) with the cheap sanity checks on them in
    ``checks``: `output_head` on the first batch's outputs, `budget_units` per budget and, with early
    stopping, `model_learned` (each problem is also raised as a `RobustkitWarning`). For the attack's own checks, run `diagnose`.
    ``log`` (untargeted): ``{"attack", "accuracy"}`` after each attack or suite component, in order.
    ``survivors``: the global indices of the images still robust (``keep_survivors=True``), else None.
    ``adaptive``: the adaptive evaluation's record (`robustkit.evaluate.adaptive.Adaptive`), else None."""

    def __init__(self, numbers: dict[str, float]):
        super().__init__(numbers)
        self.checks: list[Check] = []
        self.log: list[dict[str, Any]] = []
        self.survivors: list[int] | None = None
        self.adaptive: Any = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-able: the numbers, the checks, the log and the adaptive evaluation's record."""
        out: dict[str, Any] = {**self, "checks": [c.as_dict() for c in self.checks], "log": list(self.log)}
        if self.adaptive is not None:
            out["adaptive"] = self.adaptive.as_dict()
        return out


def _expand(attack: Attack | Sequence[Attack]) -> tuple[list[Attack], list[str]]:
    """The attacks to run in order, suites replaced by their components, and a label for each."""
    given = [attack] if isinstance(attack, Attack) else list(attack) if isinstance(attack, Sequence) else []
    if not given or not all(isinstance(a, Attack) for a in given):
        raise TypeError("attack must be an Attack or a non-empty sequence of them (robustkit.attack(name, ...))")
    attacks: list[Attack] = []
    labels: list[str] = []
    for a in given:
        if hasattr(a, "components"):
            attacks += a.components()
            labels += a.component_labels()
        else:
            attacks.append(a)
            labels.append(a.label())
    return attacks, labels


def _share(x: Any, rank: int, size: int) -> int | None:
    """How many of the images ``x`` this rank evaluates (``None`` when ``x`` has no length)."""
    data = getattr(x, "dataset", x)
    n = len(data) if hasattr(data, "__len__") else None
    return None if n is None else max(0, -(-(n - rank) // size))


def _rank_path(path: Path, rank: int, size: int) -> Path:
    return path if size == 1 else path.with_name(f"{path.stem}.rank{rank}{path.suffix or '.jsonl'}")


def _digest(*tensors: torch.Tensor) -> str:
    """A short hash of the tensors' values (not their names): equal for a model and a wrapper around it."""
    digest = hashlib.blake2b(digest_size=8)
    for t in tensors:
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class _State:
    """Early stopping's record of attacked batches, one JSON line each, written as each finishes.

    The first line fingerprints what makes the numbers: the model's weights, the attacks with all their
    parameters (seed included) and whether they are targeted; a batch is ``{"stage", "index", "images",
    "robust", "reached"}`` where ``images`` hashes its pixels and labels. A resumed run must match the
    header (a mismatch is refused, naming the field and both values) and reads back a batch only when
    its stage, image indices and pixels are the same.
    """

    VERSION = 2

    def __init__(self, path: Path, models: list[nn.Module], attacks: list[Attack], targeted: bool):
        weights = "+".join(_digest(*m.state_dict().values()) for m in models)  # the attacked model, and the judge
        header = {"robustkit_state": self.VERSION, "model": weights, "attacks": [a.describe() for a in attacks],
                  "targeted": targeted}  # fmt: skip
        self.path, self.done = path, {}
        if path.exists() and path.stat().st_size:
            lines = path.read_text(encoding="utf-8").splitlines()
            try:
                found = json.loads(lines[0])
                records = [json.loads(line) for line in lines[1:] if line.strip()]
            except json.JSONDecodeError as err:
                raise ValueError(f"state file {path} is not a robustkit state ({err}); delete it to start afresh") from None
            difference = _header_difference(found, json.loads(json.dumps(header)))
            if difference:
                raise ValueError(
                    f"state file {path} was written by another evaluation: {difference}; resume with the same model, "
                    "attack and seed, or delete the file (robustkit eval: --overwrite) to start afresh"
                )
            for r in records:
                self.done[(r["stage"], tuple(r["index"]))] = (r["images"], r["robust"], r["reached"])
            batches = f"{len(records)} batch{'es' if len(records) != 1 else ''}"
            log.info("resuming from %s: %d image attacks in %s will be read back, not attacked",
                     path, sum(len(r["index"]) for r in records), batches)  # fmt: skip
            self.file = path.open("a", encoding="utf-8")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.file = path.open("w", encoding="utf-8")
            self._write(header)

    def lookup(self, stage: int, rows: _Rows) -> tuple[torch.Tensor, torch.Tensor] | None:
        found = self.done.get((stage, tuple(rows.index.tolist())))
        if found is None:
            return None
        if found[0] != _digest(rows.x, rows.y):
            first = rows.index[:3].tolist()
            raise ValueError(
                f"state file {self.path}: the images at positions {first}… are not the ones the interrupted run "
                "attacked there (another data set, sample, --limit or order); resume with the same data, or delete "
                "the file to start afresh"
            )
        return torch.tensor(found[1], dtype=torch.bool), torch.tensor(found[2], dtype=torch.bool)

    def add(self, stage: int, rows: _Rows, robust: torch.Tensor, reached: torch.Tensor) -> None:
        self._write({"stage": stage, "index": rows.index.tolist(), "images": _digest(rows.x, rows.y),
                     "robust": robust.tolist(), "reached": reached.tolist()})  # fmt: skip

    def _write(self, line: dict[str, Any]) -> None:
        self.file.write(json.dumps(line) + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


def _header_difference(found: dict[str, Any], now: dict[str, Any]) -> str | None:
    """What differs between a state file's header and this run's, in words (``None``: nothing)."""
    if found.get("robustkit_state") != now["robustkit_state"]:
        return f"state format {found.get('robustkit_state')!r} there, {now['robustkit_state']} now (another robustkit)"
    if found.get("model") != now["model"]:
        return f"the model's weights differ (fingerprint {found.get('model')} there, {now['model']} now)"
    if found.get("targeted") != now["targeted"]:
        return f"targeted {found.get('targeted')} there, {now['targeted']} now"
    old, new = found.get("attacks") or [], now["attacks"]
    if len(old) != len(new):
        return (
            f"{len(old)} attack(s) there ({', '.join(a.get('name', '?') for a in old)}), "
            f"{len(new)} now ({', '.join(a['name'] for a in new)})"
        )
    for i, (a, b) in enumerate(zip(old, new, strict=True)):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return f"attack {i + 1} ({b['name']}): {key} {a.get(key)!r} there, {b.get(key)!r} now"
    return None


@dataclass
class _Rows:
    """Images still to be attacked, with their labels, targets, global indices and whether each is
    still classified correctly (``robust``, on the CPU)."""

    x: torch.Tensor
    y: torch.Tensor
    target: torch.Tensor | None
    index: torch.Tensor
    robust: torch.Tensor

    def __len__(self) -> int:
        return len(self.index)

    def select(self, keep: torch.Tensor | slice) -> _Rows:
        """The rows ``keep`` (a CPU boolean mask or a slice)."""
        t = self.target

        def pick(v: torch.Tensor) -> torch.Tensor:
            return v[keep] if isinstance(keep, slice) else v[keep.to(v.device)]

        return _Rows(pick(self.x), pick(self.y), None if t is None else pick(t), pick(self.index), pick(self.robust))

    @staticmethod
    def cat(parts: list[_Rows]) -> _Rows:
        if len(parts) == 1:
            return parts[0]

        def joined(field: str) -> torch.Tensor:
            return torch.cat([getattr(p, field) for p in parts])

        target = None if parts[0].target is None else joined("target")
        return _Rows(joined("x"), joined("y"), target, joined("index"), joined("robust"))


class _Survivors:
    """Early stopping's attack pipeline: attack s runs on the images that survived attacks < s.

    Each stage pools the survivors of consecutive data batches and attacks them ``batch_size``
    at a time, so attacks run on full batches (where a CPU or GPU is most efficient: on the CPU an
    attack of half a batch costs about two thirds of a whole one) while each stage holds less than
    one batch between calls. Counts go to ``counts``: ``attacked``; ``reached`` (targeted: the
    image is then done); ``robust`` for the images that survive every attack.
    """

    def __init__(
        self,
        attacks: list[Attack],
        model: nn.Module,
        judge: nn.Module,
        batch_size: int,
        counts: dict,
        state: _State | None = None,
        labels: Sequence[str] = (),
        images: int | None = None,
        kept: list[torch.Tensor] | None = None,
    ):
        self.attacks, self.model, self.judge, self.batch_size, self.counts = attacks, model, judge, batch_size, counts
        self.kept = kept
        self.state = state
        self.pending: list[list[_Rows]] = [[] for _ in attacks]
        # log lines per attack: the time left after its first batch, its end (`robustkit.core.stages`)
        self.stages = [Stage(f"attack {label}", unit="images attacked", interleaved=True)
                       for label in (labels or [a.label() for a in attacks])]
        self.entered, self.read_back, self.images = [0] * len(attacks), [0] * len(attacks), images
        self.targeted = False

    def add(self, rows: _Rows, stage: int = 0) -> None:
        if len(rows) == 0:
            return
        if stage == len(self.attacks):
            self.counts["robust"] += int(rows.robust.sum())
            if self.kept is not None and rows.target is None:
                self.kept.append(rows.index[rows.robust.to(rows.index.device)].cpu())
            return
        self.pending[stage].append(rows)
        self.entered[stage] += len(rows)
        self.targeted = rows.target is not None
        while sum(map(len, self.pending[stage])) >= self.batch_size:
            self._attack(stage)

    def finish(self) -> None:
        for stage in range(len(self.attacks)):
            while self.pending[stage]:
                self._attack(stage)
            self._log_end(stage)

    def _estimate(self, stage: int) -> int:
        """The images attack ``stage`` will see: exact once the data is read, else extrapolated from the share so far."""
        seen = self.counts["total"]
        if self.images is None or seen >= self.images or not seen:
            return self.entered[stage]
        return round(self.entered[stage] * self.images / seen)

    def _log_end(self, stage: int) -> None:
        st = self.stages[stage]
        if not self.entered[stage]:
            return
        st.total = None
        notes = [] if self.targeted else [f"{self.counts[f'after_{stage}']} still robust"]
        notes += [f"{self.read_back[stage]} read back from the state file"] if self.read_back[stage] else []
        st.note = ", ".join(notes)
        st.end()

    def _attack(self, stage: int) -> None:
        pool = _Rows.cat(self.pending[stage])
        rows, rest = pool.select(slice(0, self.batch_size)), pool.select(slice(self.batch_size, None))
        self.pending[stage] = [rest] if len(rest) else []
        recorded = None if self.state is None else self.state.lookup(stage, rows)
        st = self.stages[stage]  # no start line: an error in the first batch stays the only line (CLI: exit 2)
        if recorded is not None:
            robust, reached = recorded
            self.counts["resumed"] += len(rows)
            self.read_back[stage] += len(rows)
        else:
            st.total = self._estimate(stage) - self.read_back[stage]
            with st.timed(len(rows)):
                adv = self.attacks[stage](self.model, rows.x, rows.y, target=rows.target, index=rows.index)
            preds = _predict(self.judge, adv)
            robust = preds == rows.y.cpu()
            reached = preds == rows.target.cpu() if rows.target is not None else torch.zeros_like(robust)
            self.counts["attacked"] += len(rows)
            if self.state is not None:
                self.state.add(stage, rows, robust, reached)
        rows.robust &= robust
        if rows.target is None:
            self.counts[f"after_{stage}"] += int(rows.robust.sum())
            self.add(rows.select(rows.robust), stage + 1)
        else:
            self.counts["reached"] += int(reached.sum())
            self.add(rows.select(~reached), stage + 1)


def _direction(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """FGSM direction (on x's device) and clean predictions (CPU), frozen model in eval mode."""
    device = model_device(model)
    with preserved_state(model):
        model.eval()
        t = None if target is None else target.to(device)
        sign, logits = gradient_sign_and_logits(model, x.to(device), y.to(device), t)
    return sign.to(x.device), logits.argmax(1).cpu()


@dataclass
class Sweep:
    """Accuracy (and targeted success) per eps; ``passes`` counts forward/backward passes;
    ``checks``: `monotone_in_eps` on the curve (a problem is also raised as a `RobustkitWarning`)."""

    eps: list[float]
    accuracy: list[float]
    target_rate: list[float] | None = None
    passes: dict[str, int] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "eps": self.eps,
            "accuracy": self.accuracy,
            "target_rate": self.target_rate,
            "passes": self.passes,
            "checks": [c.as_dict() for c in self.checks],
        }


def eps_sweep(
    attack: Attack,
    model: nn.Module,
    x: Any,
    y: torch.Tensor | None = None,
    eps_values: Sequence[float | str] | None = None,
    target: torch.Tensor | None = None,
    batch_size: int = 256,
) -> Sweep:
    """Accuracy under ``attack`` at each eps.

    FGSM (from any backend: they agree exactly, see `agreement`) reuses one gradient per
    batch, whose forward pass also gives the clean predictions: one forward and one
    backward, then one forward per nonzero eps. Every other attack runs once per eps.
    """
    if eps_values is None or (isinstance(eps_values, torch.Tensor) and eps_values.dtype == torch.int64):
        raise TypeError("eps_sweep needs eps_values=[...]; with a Dataset or DataLoader pass it by keyword")
    eps_list = [parse_eps(e) for e in eps_values]
    hits = np.zeros(len(eps_list))
    target_hits = np.zeros(len(eps_list))
    passes = {"forward": 0, "backward": 0}
    reuse_gradient = attack.name == "fgsm"
    n = 0
    # log lines: the time left after the first batch, the count and time at the end (no start line: an error in
    # the first batch stays the only line, as for `robust_accuracy`'s attacks)
    st = Stage(f"eps sweep of {attack.label()} at {len(eps_list)} budgets", _share(x, 0, 1))
    for xb, yb, tb, ib in _indexed_batches(model, x, y, batch_size, target):
        n += len(xb)
        direction, clean = _direction(model, xb, yb, tb) if reuse_gradient else (None, None)
        if direction is not None:
            passes["forward"] += 1
            passes["backward"] += 1
        for j, eps in enumerate(eps_list):
            if eps == 0 and clean is not None:
                preds = clean
            else:
                if eps == 0:
                    adv = xb
                elif direction is not None:
                    adv = (xb + eps * direction).clamp(0, 1)
                else:
                    adv = attack.with_params(eps=eps)(model, xb, yb, target=tb, index=ib)  # seeds by global index
                preds = _predict(model, adv)
                passes["forward"] += 1
            hits[j] += int((preds == yb.cpu()).sum())
            if tb is not None:
                target_hits[j] += int((preds == tb.cpu()).sum())
        st.advance(len(xb))
    if n == 0:
        raise ValueError("the data is empty; pass at least one image")
    st.end()
    sweep = Sweep(
        eps=eps_list,
        accuracy=(hits / n).tolist(),
        target_rate=(target_hits / n).tolist() if target is not None else None,
        passes=passes,
    )
    if len(set(eps_list)) >= 2:
        sweep.checks.append(monotone_in_eps(eps_list, sweep.accuracy, n))
    warn_problems(sweep.checks)
    return sweep


@dataclass
class Budget:
    """Per image: the smallest k with FGSM at k/255 succeeding (``-1``: not within ``max_k``)."""

    k: torch.Tensor
    success: torch.Tensor
    trajectory: torch.Tensor  # N × max_k predictions, one column per budget tried
    x_adv: torch.Tensor  # the adversarial image at the budget found (at max_k on failure)
    passes: dict[str, int]


def _in_memory(x: Any, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Tensors ``(x, y)`` for functions whose result is per image (data sets are loaded whole)."""
    if isinstance(x, torch.Tensor):
        if not isinstance(y, torch.Tensor):
            raise TypeError("labels are missing: pass y with a tensor x, or a Dataset/DataLoader of (image, label) pairs")
        return x, y
    if y is not None:
        raise TypeError(f"pass y only with a tensor x: a {type(x).__name__} carries its own labels")
    data = as_image_set(x)
    return data.x, data.y


def minimal_budget(
    model: nn.Module,
    x: Any,
    y: torch.Tensor | None = None,
    target: torch.Tensor | None = None,
    max_k: int = 64,
) -> Budget:
    """Smallest FGSM budget k/255 (k = 1, 2, …, max_k) that changes each prediction.

    Untargeted: until the prediction differs from ``y``. Targeted: until it equals
    ``target`` (x' = x − ε·sign ∇ₓL(x, target)). The gradient is computed once; each k
    costs one forward pass over the images not yet fooled. ``x`` may be a Dataset or
    DataLoader too (loaded whole: the result has one row per image).
    """
    x, y = _in_memory(x, y)
    check_images(x)
    num_classes = inspect_model(model, x)
    check_labels(y, len(x), num_classes)
    if target is not None:
        check_labels(target, len(x), num_classes, "target")
    if not isinstance(max_k, int) or not 1 <= max_k <= 255:
        raise ValueError(f"max_k={max_k!r} must be an integer in [1, 255]")
    direction, _ = _direction(model, x, y, target)
    passes = {"forward": 1, "backward": 1}
    n = len(x)
    k_found = torch.full((n,), -1, dtype=torch.int64)
    trajectory = torch.full((n, max_k), -1, dtype=torch.int64)
    x_adv = x.clone()
    active = torch.ones(n, dtype=torch.bool)
    for k in range(1, max_k + 1):
        idx = active.nonzero().flatten()
        if len(idx) == 0:
            break
        adv = (x[idx] + (k / 255.0) * direction[idx]).clamp(0, 1)
        preds = _predict(model, adv)
        passes["forward"] += 1
        trajectory[idx, k - 1] = preds
        done = preds != y[idx].cpu() if target is None else preds == target[idx].cpu()
        x_adv[idx] = adv
        k_found[idx[done]] = k
        active[idx[done]] = False
    return Budget(k_found, k_found > 0, trajectory, x_adv, passes)


def agreement(
    name: str,
    model: nn.Module,
    x: Any,
    y: torch.Tensor | None = None,
    backends: Sequence[str] | None = None,
    target: torch.Tensor | None = None,
    **params: Any,
) -> list[dict[str, Any]]:
    """Run attack ``name`` from each backend on the same batch and compare them.

    One row per backend: adversarial accuracy, max |Δx| and fraction of equal predictions
    against the first backend, mean perturbation norms.
    """
    x, y = _in_memory(x, y)
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; valid names: {', '.join(ATTACKS)}")
    rows, first_adv, first_pred = [], None, None
    for backend in backends or list(ATTACKS[name]):
        adv = attack_class(name, backend)(**params)(model, x, y, target=target)
        preds = predict(model, adv)
        delta = (adv - x).flatten(1)
        row = {
            "backend": backend,
            "accuracy": _rate(preds == y.cpu()),
            "mean_linf": float(delta.abs().max(dim=1).values.mean()),
            "mean_l2": float(delta.norm(dim=1).mean()),
            "mean_l1": float(delta.abs().sum(dim=1).mean()),
        }
        if first_adv is None:
            first_adv, first_pred = adv, preds
        row["max_abs_diff"] = float((adv - first_adv).abs().max())
        row["prediction_agreement"] = _rate(preds == first_pred)
        rows.append(row)
    return rows
