"""pytorch-ood detectors behind robustkit's Detector protocol.

Logit-based detectors (max logit, max softmax, energy, entropy, ODIN) need only the model.
Feature-based ones (Mahalanobis, ViM, KNN) fit on ID training data and need the model's
penultimate features: the input of the ``nn.Linear`` that really produces the logits. At fit,
every ``nn.Linear`` is hooked during one forward pass on the first fit batch, and the head is
the one whose output equals the model's output (the last such call if several do), whatever
the order the layers were registered in and whatever auxiliary layers run beside it; that head
is reused (and checked) when scoring. A model whose logits no layer outputs as they are (a
temperature division or another op after the head, no ``nn.Linear``, TorchScript) is refused:
pass ``features=callable`` (and, for the detectors that also use the head, ``head=nn.Linear``,
checked to map them to the logits). The post-hoc detectors that reshape the features or the head
(ReAct, ASH, DICE, SHE, ...) are in `robustkit.detectors.posthoc`.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import torch
from torch import nn

from ..core.backends import require
from ..core.checks import model_device, preserved_state
from ..core.papers import HENDRYCKS_2017, HENDRYCKS_2022, LEE_2018, LIANG_2018, LIU_2020, SUN_2022, WANG_2022
from ..core.params import Param, component, positive_int
from .base import Detector

TEMPERATURE = Param("temperature", 1.0, "softmax temperature T", low=0, low_open=True)
FEATURES = component(
    "features",
    (Callable,),
    "callable x → N×D penultimate features; default: the input of the nn.Linear whose output is the logits",
)
HEAD = component(
    "head", (nn.Linear,), "the nn.Linear that maps the features to the logits; default: found in the forward pass"
)


class _LogitDetector(Detector):
    """A pytorch-ood detector that reads the logits; ``backend_args`` maps our names to its."""

    pood_name: ClassVar[str]

    def backend_args(self) -> dict[str, Any]:
        return {"t": self.params["temperature"]} if "temperature" in self.params else {}

    def _fit(self, data, batch_size):
        pood = require("pytorch_ood.detector")
        self._backend = getattr(pood, self.pood_name)(None, **self.backend_args())

    @torch.no_grad()
    def _score(self, x):
        return self._backend.predict_logits(self._module()(x))

    def reads(self) -> str | None:
        return "logits"

    def score_outputs(self, logits, features):
        return self._backend.predict_logits(logits)


class MaxLogit(_LogitDetector):
    """−max logit (pytorch_ood.detector.MaxLogit)."""

    name = "max_logit"
    pood_name = "MaxLogit"
    paper = HENDRYCKS_2022


class MaxSoftmax(_LogitDetector):
    """−max softmax probability at a temperature (pytorch_ood.detector.MaxSoftmax)."""

    name = "max_softmax"
    pood_name = "MaxSoftmax"
    parameters = (TEMPERATURE,)
    paper = HENDRYCKS_2017


class Energy(_LogitDetector):
    """−T·logsumexp(logits/T) (pytorch_ood.detector.EnergyBased)."""

    name = "energy"
    pood_name = "EnergyBased"
    parameters = (TEMPERATURE,)
    paper = LIU_2020


class Entropy(_LogitDetector):
    """Entropy of the softmax (pytorch_ood.detector.Entropy)."""

    name = "entropy"
    pood_name = "Entropy"
    paper = HENDRYCKS_2017


class ODIN(Detector):
    """ODIN: temperature scaling plus an input perturbation (pytorch_ood.detector.ODIN)."""

    name = "odin"
    parameters = (
        Param("temperature", 1000.0, "softmax temperature T", low=0, low_open=True),
        Param("eps", 0.0014, "size of the input perturbation that raises the top softmax score", low=0),
    )
    paper = LIANG_2018

    def _fit(self, data, batch_size):
        pood = require("pytorch_ood.detector")
        self._backend = pood.ODIN(self._module(), eps=self.params["eps"], temperature=self.params["temperature"])

    def _score(self, x):
        with torch.enable_grad():
            return self._backend.predict(x)


@dataclasses.dataclass(frozen=True)
class Head:
    """The ``nn.Linear`` whose output is the model's logits: its input is the penultimate features.

    ``call`` is which of the layer's calls in one forward pass produces the logits (0 unless the
    layer is shared); ``name`` is its path in the model, for messages.
    """

    linear: nn.Linear
    call: int
    name: str


_HEADS: weakref.WeakKeyDictionary[nn.Module, Head | None] = weakref.WeakKeyDictionary()  # model -> head found at fit
_USE_FEATURES = (
    "pass features=callable (x → N×D penultimate features) when constructing the detector "
    "(and, for the detectors that also use the head, head=the nn.Linear that maps those features to the logits)"
)


def last_linear(model: nn.Module) -> nn.Linear | None:
    """The model's last *registered* ``nn.Linear``, or ``None`` (a quick structural test only:
    the head that really produces the logits is found by `find_head`)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def _matches(output: Any, logits: torch.Tensor) -> bool:
    return (
        isinstance(output, torch.Tensor)
        and output.shape == logits.shape
        and torch.allclose(output.to(logits.device, logits.dtype), logits, equal_nan=True)
    )


def _forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    logits = model(x)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"feature detectors need a classifier returning N×C logits; the model returned {got}")
    return logits


def _hooked(model: nn.Module, x: torch.Tensor, linears: dict[nn.Linear, str]) -> tuple[torch.Tensor, list[tuple]]:
    """One forward pass with ``linears`` hooked: the logits and, per call in order, ``(linear, k, input, output)``
    (tensors kept only for 2-D outputs, the only ones that can be N×C logits)."""
    calls: list[tuple] = []
    count: dict[nn.Linear, int] = {}

    def hook(module, args, kwargs, output):
        k = count[module] = count.get(module, -1) + 1
        keep = isinstance(output, torch.Tensor) and output.dim() == 2
        inp = args[0] if args else kwargs.get("input")
        calls.append((module, k, inp if keep else None, output if keep else None))

    handles = [m.register_forward_hook(hook, with_kwargs=True) for m in linears]
    try:
        logits = _forward(model, x)
    finally:
        for handle in handles:
            handle.remove()
    return logits, calls


def find_head(model: nn.Module, x: torch.Tensor, head: nn.Linear | None = None) -> tuple[Head, torch.Tensor, torch.Tensor]:
    """The layer that really produces the logits, found in one forward pass on ``x``.

    Every ``nn.Linear`` (or only ``head``, to verify it) is hooked; the head is the one whose
    output equals the model's output (same shape, ``torch.allclose``), the last such call if
    several do. Returns the head, the logits and the features (its input, N×D); raises
    ``ValueError`` naming ``features=`` when no layer qualifies (no Linear, an op after the head
    such as a temperature division, a TorchScript model).
    """
    names = {m: n or "(the model itself)" for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    if head is not None:
        if head not in names:
            raise ValueError(f"head={head} is not a layer of the model, so it cannot produce its logits; {_USE_FEATURES}")
        names = {head: names[head]}
    if not names:
        what = "a TorchScript model, whose layers cannot be hooked" if isinstance(model, torch.jit.ScriptModule) else "no nn.Linear layer"
        raise ValueError(
            f"feature detectors read the input of the nn.Linear that produces the logits, and the model has {what}; "
            + _USE_FEATURES
        )
    logits, calls = _hooked(model, x, names)
    found = [c for c in calls if _matches(c[3], logits)]
    if not found:
        seen = ", ".join(
            f"{names[m]} → {'×'.join(map(str, out.shape)) if out is not None else 'not N×C'}" for m, _, _, out in calls
        )
        which = f"head={names[head]}" if head is not None else "no nn.Linear"
        raise ValueError(
            f"{which} outputs the model's logits (shape {tuple(logits.shape)}; Linear calls seen: {seen or 'none'}): "
            "the model changes them after its last layer (e.g. divides by a temperature) or ends in another op, "
            f"so no layer's input is the penultimate features for sure; {_USE_FEATURES}"
        )
    linear, k, features, _ = found[-1]
    if not isinstance(features, torch.Tensor):
        raise ValueError(f"the head {names[linear]} was called without a tensor input; {_USE_FEATURES}")
    return Head(linear, k, names[linear]), logits, features.flatten(1)


def _search(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """`find_head` on ``x``, remembered for ``model``: its logits and features, or ``None`` when
    no layer qualifies."""
    try:
        head, logits, features = find_head(model, x)
    except ValueError:
        _HEADS[model] = None
        return None
    _HEADS[model] = head
    return logits, features


def _read(model: nn.Module, x: torch.Tensor, head: Head) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One forward pass reading ``head``'s input; the features are ``None`` unless that call's
    output is the logits."""
    logits, calls = _hooked(model, x, {head.linear: head.name})
    call = next((c for c in calls if c[1] == head.call), None)
    if call is None or not _matches(call[3], logits) or not isinstance(call[2], torch.Tensor):
        return logits, None
    return logits, call[2].flatten(1)


def _through(model: nn.Module, x: torch.Tensor, head: Head) -> tuple[torch.Tensor, torch.Tensor]:
    """`_read` that insists: the head found at fit must still produce the logits."""
    logits, features = _read(model, x, head)
    if features is None:
        raise ValueError(
            f"the head found at fit ({head.name}) no longer produces the model's logits on these inputs; "
            "fit the detector again after changing the model, or " + _USE_FEATURES
        )
    return logits, features


def penultimate(model: nn.Module, x: torch.Tensor, head: Head | None = None) -> torch.Tensor:
    """The penultimate features for ``x`` (N×D): the input of the ``nn.Linear`` that produces the
    logits (`find_head`; the one found at fit is reused), captured by a forward hook."""
    features = logits_and_features(model, x, head)[1]
    if features is None:
        find_head(model, x)  # raises, saying why
    assert features is not None
    return features


def logits_and_features(
    model: nn.Module, x: torch.Tensor, head: Head | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One forward pass: the logits and the penultimate features (N×D) read at ``head``.

    By default the head is the one found for this model at fit (searched on ``x`` if there is
    none, or if it stopped producing the logits). The features are ``None`` when no
    ``nn.Linear`` produces the logits: logit detectors need nothing more, feature detectors
    refuse (and refuse a head other than the one they were fitted on).
    """
    if head is not None:
        return _through(model, x, head)
    if model in _HEADS:
        known = _HEADS[model]
        if known is None:
            return _forward(model, x), None
        logits, features = _read(model, x, known)
        if features is not None:
            return logits, features
    found = _search(model, x)  # first time, or the model changed since its head was found
    return found if found is not None else (_forward(model, x), None)


class _FeatureDetector(Detector):
    """Fits a pytorch-ood features detector on the model's penultimate features.

    The head is found (`find_head`) in the first fit batch's forward pass and reused, checked,
    on every later batch and when scoring.
    """

    needs_data = True
    pood_name: ClassVar[str]

    def __init__(self, **params: Any):
        super().__init__(**params)
        self._head: Head | None = None  # the head whose input is read (None with features=)
        self._classes = 0  # the model's number of logits

    def _start(self, x: torch.Tensor) -> torch.Tensor:
        """The first fit batch's features; finds the head (or, with ``features=``, runs the model once)."""
        model, features = self._module(), self.params["features"]
        self._head = None
        if features is None:
            self._head, logits, z = find_head(model, x, self._given_head())
            if self._given_head() is None:
                _HEADS[model] = self._head
        else:
            logits, z = _forward(model, x), features(x)
            self._check_features(logits, z, x)
        self._classes = logits.shape[1]
        return z

    def _given_head(self) -> nn.Linear | None:
        return None

    def _check_features(self, logits: torch.Tensor, z: torch.Tensor, x: torch.Tensor) -> None:
        """Checks on ``features=``'s output (ViM: that the head maps it to the logits)."""

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        features = self.params["features"]
        if features is not None:
            return features(x)
        assert self._head is not None
        return _through(self._module(), x, self._head)[1]

    def _make(self, pood: Any) -> Any:
        return getattr(pood, self.pood_name)(None)

    def _fit_backend(self, z: torch.Tensor, y: torch.Tensor) -> None:
        """Fit the pytorch-ood detector on the fit data's N×D features and labels."""
        self._backend.fit_features(z, y)

    def _predict(self, z: torch.Tensor) -> torch.Tensor:
        """Scores from N×D features."""
        return self._backend.predict_features(z)

    def _features(self, data, batch_size) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(features, labels)`` per batch of the fit data, on the model's device."""
        model = self._module()
        device = model_device(model)
        with preserved_state(model), torch.no_grad():
            model.eval()
            for i, (xb, yb) in enumerate(self.fit_batches(data, batch_size)):
                xb = xb.to(device)
                yield (self._start(xb) if i == 0 else self._encode(xb)), yb.to(device)

    def _fit(self, data, batch_size):
        pood = require("pytorch_ood.detector")
        pairs = list(self._features(data, batch_size))  # N×D features; the images are not kept
        self._backend = self._make(pood)
        self._fit_backend(torch.cat([z for z, _ in pairs]), torch.cat([y for _, y in pairs]))

    @torch.no_grad()
    def _score(self, x):
        return self._predict(self._encode(x))

    def reads(self) -> str | None:
        return "features" if self.params["features"] is None and self._given_head() is None else None

    def score_outputs(self, logits, features):
        if self.reads() == "features" and (features is None or _HEADS.get(self._module()) != self._head):
            raise ValueError(
                f"detector {self.name!r} was fitted on the input of {self._head.name if self._head else 'a head'}, "
                "which no longer produces the model's logits (the model changed since fit): fit it again"
            )
        return self._predict(features)


def check_labels(name: str, y: torch.Tensor, classes: int) -> None:
    """Labels of fit data for a detector with one statistic per logit: in 0..classes-1, raising a clear error."""
    bad = y[(y < 0) | (y >= classes)]
    if len(bad):
        raise ValueError(
            f"{name}: label {int(bad[0])} in the fit data, but the model has {classes} logits "
            f"(classes 0..{classes - 1}); give labels in that range"
        )


def check_every_class(name: str, counts: torch.Tensor) -> None:
    """Every class of the model has fit images (``counts`` per class), or a clear error."""
    missing = (counts == 0).nonzero().flatten().tolist()
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (f", … ({len(missing)} in all)" if len(missing) > 10 else "")
        raise ValueError(
            f"{name} needs every one of the model's {len(counts)} classes in the fit data; "
            f"classes [{shown}] have no images: fit on data that holds them all"
        )


class _HeadDetector(_FeatureDetector):
    """A features detector that also uses the head's weight and bias (the head found in the forward
    pass, or ``head=``: with ``features=``, checked so that ``head(features(x))`` equals the logits)."""

    parameters: ClassVar[tuple[Param, ...]] = (FEATURES, HEAD)

    def _given_head(self) -> nn.Linear | None:
        return self.params["head"]

    def _check_features(self, logits, z, x):
        head = self.params["head"]
        if head is None:
            head = find_head(self._module(), x)[0].linear
        if z.dim() != 2 or z.shape[1] != head.in_features or not _matches(head(z), logits):
            raise ValueError(
                f"{self.name}: head {head} does not map features(x) (shape {tuple(z.shape)}) to the model's logits; "
                "pass the features= and head= that do (logits = head(features(x)))"
            )
        self._features_head = head

    def linear(self) -> nn.Linear:
        """The head (after fit): the ``nn.Linear`` whose output is the logits."""
        return self._head.linear if self._head is not None else self._features_head

    def weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The head's weight (C×D) and bias (C; zeros for a head without one), detached."""
        head = self.linear()
        w = head.weight.detach()
        b = head.bias.detach() if head.bias is not None else torch.zeros(len(w), dtype=w.dtype, device=w.device)
        return w, b

    def head_copy(self) -> nn.Linear:
        """A frozen copy of the head, for pytorch-ood classes that move or read a head module."""
        w, b = self.weights()
        copy = nn.Linear(w.shape[1], w.shape[0], device=w.device, dtype=w.dtype)
        with torch.no_grad():
            copy.weight.copy_(w)
            copy.bias.copy_(b)
        return copy.requires_grad_(False)


class Mahalanobis(_FeatureDetector):
    """Class-conditional Gaussians with a shared covariance (pytorch_ood.detector.Mahalanobis).

    The class means and the pooled scatter matrix are accumulated batch by batch (in float64),
    so fitting holds neither the images nor the features; the result is set on pytorch-ood's
    detector exactly as its ``fit_features`` would (scatter not divided by N, ridge 1e-6).
    There is one mean per logit of the model, so the fit data must hold every class.
    """

    name = "mahalanobis"
    pood_name = "Mahalanobis"
    parameters = (FEATURES,)
    paper = LEE_2018

    def _fit(self, data, batch_size):
        pood = require("pytorch_ood.detector")
        counts, mu, outer = self._moments(data, batch_size)
        scatter = outer - (mu.T * counts) @ mu  # Σ_i z_i z_iᵀ − Σ_c n_c μ_c μ_cᵀ = Σ_c Σ_{i∈c} (z_i−μ_c)(z_i−μ_c)ᵀ
        self._backend = self._set_gaussians(pood, mu, scatter)

    def _moments(self, data, batch_size) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-class image counts (C), class means (C×D) and Σ_i z_i z_iᵀ (D×D) of the fit data's features, in
        float64, accumulated batch by batch."""
        sums = counts = outer = None
        for z, y in self._features(data, batch_size):
            z = z.double()
            if sums is None:  # after the first batch: the class count is the model's
                sums = torch.zeros(self._classes, z.shape[1], dtype=torch.float64, device=z.device)
                counts = torch.zeros(self._classes, dtype=torch.float64, device=z.device)
                outer = torch.zeros(z.shape[1], z.shape[1], dtype=torch.float64, device=z.device)
            check_labels(self.name, y, self._classes)
            sums.index_add_(0, y, z)
            counts.index_add_(0, y, torch.ones_like(y, dtype=torch.float64))
            outer += z.T @ z
        assert sums is not None and counts is not None and outer is not None
        check_every_class(self.name, counts)
        return counts, sums / counts[:, None], outer

    def _set_gaussians(self, pood: Any, mu: torch.Tensor, scatter: torch.Tensor) -> Any:
        """pytorch-ood's detector with the class means and the shared scatter (ridge 1e-6 added, as its
        ``fit_features`` does)."""
        scatter = scatter + torch.eye(len(scatter), dtype=torch.float64, device=scatter.device) * 1e-6
        backend = getattr(pood, self.pood_name)(None)
        backend.mu = mu.float()
        backend.cov = scatter.float()
        backend.precision = torch.linalg.inv(scatter).float()
        return backend


class KNN(_FeatureDetector):
    """Distance to the k-th nearest ID training feature (pytorch_ood.detector.KNN)."""

    name = "knn"
    pood_name = "KNN"
    parameters = (FEATURES, positive_int("k", 10, "which nearest neighbour's distance is the score"))
    paper = SUN_2022

    def _make(self, pood):
        return pood.KNN(None, k=self.params["k"])


class ViM(_HeadDetector):
    """Virtual-logit matching (pytorch_ood.detector.ViM) with the head that produces the logits.

    ``head=`` is checked: with ``features=``, ``head(features(x))`` must equal the logits; without,
    its output in the forward pass must.
    """

    name = "vim"
    pood_name = "ViM"
    parameters = (
        FEATURES,
        HEAD,
        positive_int("d", None, "dimension of the principal subspace; None: half the feature size", optional=True),
    )
    paper = WANG_2022

    def _make(self, pood):
        w, b = self.weights()
        d = self.params["d"] or max(1, min(w.shape[1] // 2, w.shape[1] - 1))
        return pood.ViM(None, d=d, w=w, b=b)
