"""OOD metrics (OOD = positive class) and detector evaluation on ID vs OOD images."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class OODResult:
    """OOD metrics (OOD = positive class) and the raw scores they came from."""

    metrics: dict[str, float]
    id_scores: np.ndarray
    ood_scores: np.ndarray


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


def ood(detector: Any, id_x: Any, ood_x: Any, batch_size: int = 512) -> OODResult:
    """Score ID and OOD images with a fitted detector and compute `ood_metrics`.

    ``id_x`` and ``ood_x`` are image tensors, ImageSets or Datasets/DataLoaders (labels are
    ignored), scored in batches.
    """
    id_scores = detector.score_batches(id_x, batch_size)
    ood_scores = detector.score_batches(ood_x, batch_size)
    return OODResult(ood_metrics(id_scores, ood_scores), id_scores, ood_scores)
