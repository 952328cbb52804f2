"""OOD metrics (OOD = positive class) and detector evaluation on ID vs OOD images."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..core.checks import check_images, image_digests, model_device, preserved_state, shape_errors
from ..core.distributed import gather, merge_rows, world
from ..core.errors import NotFittedError
from ..core.stages import stage
from ..detectors.base import Detector
from ..detectors.ood import logits_and_features
from ..modelling.batches import image_batches, indexed_images
from .checks.base import Check, warn_problems
from .checks.contract import output_head
from .checks.ood import fit_overlap, input_range, ood_auroc, ood_saturated


@dataclass
class OODResult:
    """OOD metrics (OOD = positive class), the raw scores they came from, and the sanity checks
    on them (`ood_auroc`, `ood_saturated`, `output_head` for a detector that scores the logits,
    `input_range` over the fit, ID and OOD images, and `fit_overlap` for a detector fitted on data;
    `ood` also raises a `RobustkitWarning` for each problem)."""

    metrics: dict[str, float]
    id_scores: np.ndarray
    ood_scores: np.ndarray
    checks: list[Check] = field(default_factory=list)


def ood_metrics(id_scores: Sequence[float] | np.ndarray, ood_scores: Sequence[float] | np.ndarray) -> dict[str, float]:
    """AUROC, AUPR-IN, AUPR-OUT and FPR@95%TPR with OOD as the positive class.

    Higher scores mean more likely OOD. AUPR is the trapezoidal area under scikit-learn's
    precision-recall curve, as pytorch-ood computes it; ties are handled rank-wise.
    """
    from sklearn.metrics import auc, precision_recall_curve, roc_auc_score, roc_curve

    id_scores, ood_scores = np.asarray(id_scores, dtype=np.float64), np.asarray(ood_scores, dtype=np.float64)
    if len(id_scores) == 0 or len(ood_scores) == 0:
        raise ValueError("OOD metrics need at least one ID and one OOD score")
    scores = np.concatenate([id_scores, ood_scores])
    if not np.isfinite(scores).all():
        raise ValueError("OOD scores contain NaN or inf; check the detector (saturated softmax?)")
    labels = np.concatenate([np.zeros(len(id_scores)), np.ones(len(ood_scores))])
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    precision_out, recall_out, _ = precision_recall_curve(labels, scores)
    precision_in, recall_in, _ = precision_recall_curve(1 - labels, -scores)
    return {
        "AUROC": float(roc_auc_score(labels, scores)),
        "AUPR-IN": float(auc(recall_in, precision_in)),
        "AUPR-OUT": float(auc(recall_out, precision_out)),
        "FPR95TPR": float(fpr[np.searchsorted(tpr, 0.95, side="left")]),
    }


def ood(
    detector: Any, id_x: Any, ood_x: Any, batch_size: int = 512, *, distributed: bool = True
) -> OODResult | dict[str, OODResult]:
    """Score ID and OOD images with fitted detectors and compute `ood_metrics`.

    ``detector`` is one detector (returns an `OODResult`), or a list or ``{name: detector}``
    dict of them (returns ``{name: OODResult}``). Detectors that read only the same model's
    output (logit scores; feature scores on its last linear layer's input) share one forward
    pass per batch. ``id_x`` and ``ood_x`` are image tensors, ImageSets or Datasets/DataLoaders
    (labels are ignored), scored in batches.

    Inside an initialised torch.distributed process group each rank scores its share of the
    images (`robustkit.core.distributed`); the scores are gathered back into data order, so
    every rank computes the metrics of one process exactly. ``distributed=False`` scores just
    the data given.
    """
    rank, size = world(distributed)
    if isinstance(detector, Detector):
        if size == 1:
            with _scoring(detector.name, "ID", id_x):
                id_scores = detector.score_batches(id_x, batch_size)
            with _scoring(detector.name, "OOD", ood_x):
                ood_scores = detector.score_batches(ood_x, batch_size)
        else:
            named = {detector.name: detector}
            with _scoring(detector.name, "ID", id_x):
                id_scores = _sharded_scores(named, id_x, batch_size, rank, size)[detector.name]
            with _scoring(detector.name, "OOD", ood_x):
                ood_scores = _sharded_scores(named, ood_x, batch_size, rank, size)[detector.name]
        extra = _set_checks({detector.name: detector}, id_x, ood_x)
        return _checked(detector.name, id_scores, ood_scores, _head_check(detector, id_x), extra[detector.name])
    named = dict(detector) if isinstance(detector, dict) else {d.name: d for d in detector}
    if not named or not all(isinstance(d, Detector) for d in named.values()):
        raise TypeError("ood() takes a detector, or a non-empty list or {name: detector} dict of detectors")
    if not isinstance(detector, dict) and len(named) < len(detector):
        raise ValueError("two detectors share a name: pass a {name: detector} dict")
    first: dict[int, torch.Tensor] = {}  # the shared pass's first ID logits per model, for output_head
    which = next(iter(named)) if len(named) == 1 else f"{len(named)} detectors"
    with _scoring(which, "ID", id_x):
        id_scores = _score_all(named, id_x, batch_size, first) if size == 1 else _sharded_scores(named, id_x, batch_size, rank, size)
    with _scoring(which, "OOD", ood_x):
        ood_scores = _score_all(named, ood_x, batch_size) if size == 1 else _sharded_scores(named, ood_x, batch_size, rank, size)
    heads: dict[int, Check | None] = {}  # one output_head check per model that logit detectors read
    for det in named.values():
        if det.reads() == "logits" and id(det.model) not in heads:
            logits = first.get(id(det.model))
            heads[id(det.model)] = output_head(logits) if logits is not None else _head_check(det, id_x)
    extra = _set_checks(named, id_x, ood_x)
    return {
        name: _checked(
            name, id_scores[name], ood_scores[name], heads.get(id(det.model)) if det.reads() == "logits" else None,
            extra[name],
        )
        for name, det in named.items()
    }


@contextlib.contextmanager
def _scoring(detectors: str, which: str, x: Any) -> Iterator[None]:
    """The log lines of one scoring pass (`robustkit.core.stages`): its start, and its count and time at the end."""
    data = getattr(x, "dataset", x)
    n = len(data) if hasattr(data, "__len__") else None
    with stage(f"OOD scores ({detectors}), {which} images", n, unit="images" if n else "") as st:
        yield
        st.done = n or 0


SET_SAMPLE = 512  # the first images of each set that input_range and fit_overlap look at


def _set_checks(detectors: dict[str, Detector], id_x: Any, ood_x: Any) -> dict[str, list[Check]]:
    """Per detector: `input_range` over its fit data (when it learned from data), the ID and the OOD images,
    and `fit_overlap` between the ID images and its fit data. Reads the first images of each set."""
    id_first = next(iter(image_batches(id_x, SET_SAMPLE)), None)
    ood_first = next(iter(image_batches(ood_x, SET_SAMPLE)), None)
    if id_first is None or ood_first is None:
        return {name: [] for name in detectors}
    peaks = {"ID": id_first.flatten(1).amax(1).tolist(), "OOD": ood_first.flatten(1).amax(1).tolist()}
    digests = image_digests(id_first)
    out = {}
    for name, det in detectors.items():
        fit = det.fit_data
        checks = [input_range({"fit": fit.peaks, **peaks} if fit.peaks else peaks)]
        if fit.images:
            found = sum(d in fit.digests for d in digests)
            checks.append(fit_overlap(found, len(digests), len(fit.digests), fit.images))
        out[name] = checks
    return out


def _head_check(detector: Detector, id_x: Any) -> Check | None:
    """`output_head` on the model's outputs for the first 64 ID images, for a detector that scores the logits
    (a sigmoid or log-softmax head makes energy and max-logit scores meaningless or constant)."""
    if detector.reads() != "logits" or detector.model is None:
        return None
    first = next(iter(image_batches(id_x, 64)), None)
    if first is None:
        return None
    model = detector.model
    with preserved_state(model), torch.no_grad():
        model.eval()
        outputs = model(first[:64].to(model_device(model)))
    return output_head(outputs) if isinstance(outputs, torch.Tensor) and outputs.ndim == 2 else None


def _checked(
    name: str, id_scores: np.ndarray, ood_scores: np.ndarray, head: Check | None = None, extra: Sequence[Check] = ()
) -> OODResult:
    """The `OODResult` with its checks, each problem also raised as a `RobustkitWarning` naming the detector."""
    result = OODResult(ood_metrics(id_scores, ood_scores), id_scores, ood_scores)
    checks = (ood_auroc(result), ood_saturated(id_scores, ood_scores), *([head] if head is not None else []), *extra)
    result.checks = [dataclasses.replace(check, name=f"{check.name} ({name})") for check in checks]
    warn_problems(result.checks, stacklevel=4)
    return result


def _sharded_scores(
    detectors: dict[str, Detector], x: Any, batch_size: int, rank: int, size: int
) -> dict[str, np.ndarray]:
    """`_score_all` over this rank's share of ``x``, gathered from every rank back into data order."""

    def local() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        index, scores = [], {name: [] for name in detectors}
        for xb, ib in indexed_images(x, batch_size, rank, size):
            index.append(ib)
            for name, part in _score_all(detectors, xb, batch_size).items():
                scores[name].append(torch.from_numpy(part))
        if not index:
            return torch.zeros(0, dtype=torch.int64), {name: torch.zeros(0) for name in detectors}
        return torch.cat(index), {name: torch.cat(s) for name, s in scores.items()}

    parts = gather(local, size)
    return {name: merge_rows([(index, scores[name]) for index, scores in parts]).numpy() for name in detectors}


def _score_all(
    detectors: dict[str, Detector], x: Any, batch_size: int, first: dict[int, torch.Tensor] | None = None
) -> dict[str, np.ndarray]:
    """Every detector's scores on ``x``; those reading one model's outputs share its forward pass
    (whose first batch of logits goes to ``first``, keyed by the model's id, when given)."""
    shared: dict[int, list[str]] = {}
    alone = []
    for name, det in detectors.items():
        if not det.is_fitted():
            raise NotFittedError(f"detector {name!r} has not been fitted: call .fit(model, train_data) first")
        if det.reads() is not None and det.model is not None:
            shared.setdefault(id(det.model), []).append(name)
        else:
            alone.append(name)
    out: dict[str, list[torch.Tensor]] = {name: [] for name in detectors}
    for names in shared.values():
        model = detectors[names[0]].model
        assert model is not None
        device = model_device(model)
        for xb in image_batches(x, batch_size):
            check_images(xb)
            with preserved_state(model), torch.no_grad(), shape_errors(model, xb):
                model.eval()
                logits, features = logits_and_features(model, xb.to(device))
                if first is not None and id(model) not in first:
                    first[id(model)] = logits.detach().cpu()
                for name in names:
                    out[name].append(detectors[name].score_outputs(logits, features).detach().float().cpu())
    for name in alone:
        out[name].append(detectors[name].score(x, batch_size))
    if any(not scores for scores in out.values()):
        raise ValueError("no images to score; pass at least one image")
    return {name: torch.cat(scores).numpy() for name, scores in out.items()}
