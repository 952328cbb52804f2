"""Models by name: RobustBench's model zoo, timm and torchvision, each taking [0, 1] pixels.

- ``robustbench:NAME`` is an entry of RobustBench's model zoo, loaded by RobustBench's own
  ``robustbench.utils.load_model`` from its folder layout ``MODEL_DIR/<dataset>/<threat_model>/<NAME>.pt``
  (checkpoint formats, ``module.`` prefixes and ensembles as RobustBench reads them). The zoo's models
  take [0, 1] pixels already: the entries that normalise carry their own layer.
- ``timm:NAME`` (``timm:resnet18.a1_in1k``) and ``torchvision:NAME`` (``torchvision:resnet50.IMAGENET1K_V2``)
  build the architecture, load the pretrained weights from the library's own cache (the Hugging Face
  cache or torch's hub folder) and put the weights' normalisation (timm's ``pretrained_cfg`` mean/std,
  torchvision's weights transforms) in front as the model's first layer (`with_normalization`).

Nothing is downloaded unless asked (``download=True``, on the command line ``--download``): a missing
file is one `WeightsNotFoundError` naming the file and how the library fetches it.

Every model gets ``robustkit_input`` (`InputSpec`): the image size it was made for and the resize and
centre crop that bring a data set's images there (RobustBench's per-model preprocessing, timm's
pretrained config, torchvision's weights transforms). Like RobustBench, robustkit applies it to the
data, before any attack: the threat model is a budget in the model's input pixels.

Paper: Croce et al. 2021, RobustBench, https://arxiv.org/abs/2010.09670
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.util
import io
import logging
import math
import os
import sys
import tempfile
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from ..core.backends import require
from ..core.errors import BackendMissingError, CheckpointError, WeightsNotFoundError
from .checkpoint import load_state, read_weights, state_dict_of
from .folders import PREPROCESSINGS, with_model_preprocessing
from .models import with_normalization

SOURCES = ("robustbench", "timm", "torchvision")
EXAMPLES = {
    "robustbench": "robustbench:Carmon2019Unlabeled",
    "timm": "timm:resnet18.a1_in1k",
    "torchvision": "torchvision:resnet18",
}


def split_source(spec: str) -> tuple[str, str] | None:
    """``("timm", "resnet18")`` for ``"timm:resnet18"``; ``None`` for anything else (``module:factory``)."""
    kind, sep, name = spec.partition(":")
    if not sep or kind not in SOURCES:
        return None
    if not name.strip():
        raise ValueError(f"--model {spec!r} names no model: write {kind}:NAME, e.g. {EXAMPLES[kind]}")
    return kind, name.strip()


# ---------------------------------------------------------------- input size and preprocessing


@dataclass(frozen=True)
class InputSpec:
    """The images a model was made for, and how a data set's images get there.

    ``shape`` is C×H×W of the model's input (pixels in [0, 1]). Before any attack, an image is resized
    (``resize``: the shorter side to this many pixels, or to exactly (H, W) when a pair) with
    ``interpolation``, then its centre ``crop`` × ``crop`` is cut; ``None`` skips either step. ``origin``
    says where the numbers come from.
    """

    shape: tuple[int, int, int]
    resize: int | tuple[int, int] | None = None
    crop: int | None = None
    interpolation: str = "bilinear"
    origin: str = ""

    def transform(self) -> Callable[[Any], torch.Tensor]:
        """The preprocessing as a torchvision transform from a PIL image to a [0, 1] C×H×W tensor."""
        from torchvision import transforms

        steps: list[Any] = []
        if self.resize is not None:
            size = self.resize if isinstance(self.resize, int) else list(self.resize)
            steps.append(transforms.Resize(size, interpolation=transforms.InterpolationMode(self.interpolation)))
        if self.crop is not None:
            steps.append(transforms.CenterCrop(self.crop))
        return transforms.Compose([*steps, transforms.ToTensor()])

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def dataset(self, name: str) -> str:
        """Data set ``name`` preprocessed as this model needs (`with_model_preprocessing`: an ImageNet name that
        names no preprocessing gets this model's)."""
        return with_model_preprocessing(name, self.resize, self.crop, self.interpolation, self.origin)


def _fields(steps: tuple[tuple[str, Any, str | None], ...]) -> dict[str, Any]:
    """A `PREPROCESSINGS` entry's steps as `InputSpec` fields."""
    out: dict[str, Any] = {}
    for kind, size, interpolation in steps:
        if kind == "resize":
            out["resize"] = tuple(size) if isinstance(size, list) else size
            if interpolation:
                out["interpolation"] = interpolation
        else:
            out["crop"] = size
    return out


ROBUSTBENCH_PREPROCESSING: dict[str | None, dict[str, Any]] = {
    None: {},
    **{name: _fields(steps) for name, steps in PREPROCESSINGS.items()},
}
"""``robustbench.data.PREPROCESSINGS`` as `InputSpec` fields, from the data sets' own table (a test compares the
two transforms)."""

DATASET_SHAPES = {"cifar10": (3, 32, 32), "cifar100": (3, 32, 32), "imagenet": (3, 224, 224)}


def _spec_from_steps(steps: dict[str, Any], fallback: tuple[int, int, int], origin: str) -> InputSpec:
    crop, resize = steps.get("crop"), steps.get("resize")
    shape = (3, crop, crop) if crop else ((3, *resize) if isinstance(resize, tuple) else fallback)
    return InputSpec(shape, resize, crop, steps.get("interpolation", "bilinear"), origin)


def attach(model: nn.Module, spec: InputSpec) -> nn.Module:
    """``model`` with ``model.robustkit_input = spec``."""
    model.robustkit_input = spec  # type: ignore[assignment]
    return model


# ---------------------------------------------------------------- no downloads unless asked


@contextlib.contextmanager
def _downloads(label: str, allowed: bool) -> Iterator[None]:
    """While loading: unless ``allowed``, any download the libraries start (torch's hub, used by
    torchvision and by zoo entries that build on torchvision weights; the Hugging Face Hub, used by
    timm; Google Drive, used by RobustBench) raises a `WeightsNotFoundError` naming the missing file,
    and the libraries' "Downloading ..." lines are swallowed."""
    if allowed:
        yield
        return
    import torch.hub

    def refuse(where: str, how: str) -> WeightsNotFoundError:
        return WeightsNotFoundError(
            f"{label}: {where} is not on disk and robustkit does not download unless asked; {how}: pass --download "
            "(download=True), or fetch it on a machine with internet and copy it there"
        )

    def hub(url: str, dst: str, *args: Any, **kwargs: Any) -> None:
        raise refuse(dst, f"torch downloads it from {url}")

    def gdrive(gdrive_id: str, path: Any) -> None:
        raise refuse(str(path), f"RobustBench downloads it from Google Drive (gdown, file id {gdrive_id})")

    def hf(repo_id: str, filename: str | None = None, *args: Any, **kwargs: Any) -> None:
        raise refuse(f"{repo_id}/{filename} in the Hugging Face cache", "timm downloads it from the Hugging Face Hub")

    patches = [(torch.hub, "download_url_to_file", hub)]
    rb = sys.modules.get("robustbench.utils")
    if rb is not None:
        patches += [(rb, "download_gdrive_new", gdrive), (rb, "download_gdrive", gdrive)]
    hub_module = sys.modules.get("timm.models._hub")
    if hub_module is not None:
        patches.append((hub_module, "hf_hub_download", hf))
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    try:
        for owner, name, fn in patches:
            setattr(owner, name, fn)
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for owner, name, fn in saved:
            setattr(owner, name, fn)


@contextlib.contextmanager
def _pickles(allowed: bool) -> Iterator[None]:
    """Let RobustBench's own ``torch.load`` (which leaves ``weights_only`` at torch's default) read
    pickled Python objects, when the user trusts the file (``--unsafe-pickle``)."""
    if not allowed:
        yield
        return
    key, old = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    os.environ[key] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


# ---------------------------------------------------------------- RobustBench


def robustbench_dir() -> Path:
    """RobustBench's ``MODEL_DIR`` for robustkit: ``$ROBUSTKIT_CACHE/robustbench``, else
    ``~/.cache/robustkit/robustbench``."""
    cache = os.environ.get("ROBUSTKIT_CACHE")
    return Path(cache) / "robustbench" if cache else Path.home() / ".cache" / "robustkit" / "robustbench"


def _autoattack_module() -> types.ModuleType:
    """A module named ``autoattack`` that gives pyautoattack's `AutoAttack` the call signature of the
    authors' GitHub package (``log_path=``, ``run_standard_evaluation(x, y, bs=...)`` returning the
    adversarial images), which is what robustbench 1.1.1 calls."""
    pyaa = require("pyautoattack")

    class AutoAttack:
        """The authors' ``autoattack.AutoAttack`` signature over ``pyautoattack.AutoAttack``."""

        def __init__(
            self, model: nn.Module, norm: str = "Linf", eps: float = 0.3, seed: int | None = None, verbose: bool = True,
            attacks_to_run: Sequence[str] = (), version: str = "standard", is_tf_model: bool = False,
            device: Any = "cuda", log_path: str | None = None,
        ) -> None:  # fmt: skip
            if is_tf_model:
                raise ValueError("is_tf_model=True: pyautoattack runs PyTorch models only")
            suite = pyaa.AutoAttack(
                model, attacks=list(attacks_to_run) or None, device=device, eps=eps, norm=norm, seed=seed, version=version
            )
            object.__setattr__(self, "_suite", suite)
            object.__setattr__(self, "_log", (verbose, log_path))

        def __getattr__(self, name: str) -> Any:
            return getattr(object.__getattribute__(self, "_suite"), name)

        def __setattr__(self, name: str, value: Any) -> None:
            setattr(self._suite, name, value)

        def run_standard_evaluation(
            self, x_orig: torch.Tensor, y_orig: torch.Tensor, bs: int = 250, return_labels: bool = False,
            state_path: Any = None,
        ) -> Any:  # fmt: skip
            verbose, log_path = object.__getattribute__(self, "_log")
            with _authors_log(verbose, log_path):
                x_adv, y_adv = self._suite.run_standard_evaluation(x_orig, y_orig, batch_size=bs, state_path=state_path)
            return (x_adv, y_adv) if return_labels else x_adv

    module = types.ModuleType("autoattack", "pyautoattack under the authors' package name, for robustbench (robustkit)")
    module.AutoAttack = AutoAttack  # type: ignore[attr-defined]
    module.state = require("pyautoattack.state")  # type: ignore[attr-defined]
    module.__path__ = []  # a package, so `import autoattack.state` finds the submodule in sys.modules
    return module


@contextlib.contextmanager
def _authors_log(verbose: bool, log_path: str | None) -> Iterator[None]:
    """pyautoattack logs to the ``auto-attack`` logger where the authors' package printed (and wrote
    to ``log_path``): show it the same way."""
    logger = logging.getLogger("auto-attack")
    handlers: list[logging.Handler] = []
    if verbose:
        handlers.append(logging.StreamHandler(sys.stdout))
    if log_path:
        handlers.append(logging.FileHandler(log_path))
    level = logger.level
    for h in handlers:
        logger.addHandler(h)
    if handlers:
        logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        for h in handlers:
            logger.removeHandler(h)
            h.close()
        logger.setLevel(level)


def import_robustbench() -> Any:
    """The ``robustbench`` package, importable and runnable beside pyautoattack.

    robustbench 1.1.1 (PyPI) declares pyautoattack as its dependency but imports ``autoattack``, the
    authors' package as installed from GitHub, which is not on PyPI. When no ``autoattack`` is
    installed, robustkit registers a module of that name that runs pyautoattack (the same attacks)
    with the GitHub package's call signature, so ``robustbench.utils.load_model`` and
    ``robustbench.eval.benchmark`` both work.
    """
    if "autoattack" not in sys.modules and importlib.util.find_spec("autoattack") is None:
        shim = _autoattack_module()
        sys.modules["autoattack"] = shim
        sys.modules["autoattack.state"] = shim.state
    require("robustbench")
    robustbench = importlib.import_module("robustbench")
    if not hasattr(robustbench, "benchmark"):  # torchattacks 3.5.1's commented-out copy of robustbench
        raise BackendMissingError(
            "robustbench's files were overwritten by torchattacks 3.5.1, whose wheel ships an old, commented-out "
            "copy of robustbench (no robustbench.eval.benchmark, no ImageNet preprocessings); reinstall robustbench "
            "after torchattacks: pip install --force-reinstall --no-deps robustbench==1.1.1 "
            "(uv: uv sync --reinstall-package robustbench)"
        )
    return robustbench


def _robustbench_names(dataset: str | None, threat_model: str | None) -> tuple[Any, Any]:
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    base = (dataset or "cifar10").partition(":")[0]
    datasets = {d.value: d for d in BenchmarkDataset}
    if base not in datasets:
        raise ValueError(
            f"robustbench: models are made for RobustBench's data sets ({', '.join(datasets)}), not {base}: "
            "pass --dataset cifar10, cifar100 or imagenet"
        )
    threats = {t.value.lower(): t for t in ThreatModel}
    tm = threats.get((threat_model or "Linf").lower())
    if tm is None:
        raise ValueError(
            f"unknown RobustBench threat model {threat_model!r}; valid: {', '.join(t.value for t in ThreatModel)}"
        )
    return datasets[base], tm


def robustbench_model(
    name: str,
    *,
    dataset: str | None = None,
    threat_model: str | None = None,
    model_dir: str | Path | None = None,
    weights: str | Path | None = None,
    num_classes: int | None = None,
    download: bool = False,
    unsafe_pickle: bool = False,
) -> nn.Module:
    """RobustBench's zoo entry ``name`` for ``dataset`` (cifar10, cifar100, imagenet) and ``threat_model``
    (Linf, L2, corruptions), in eval mode, taking [0, 1] pixels, loaded by ``robustbench.utils.load_model``.

    Its weights are read from ``model_dir`` (default `robustbench_dir`) in RobustBench's layout,
    ``<dataset>/<threat_model>/<name>.pt`` (an ensemble: ``<name>.pt_m0.pt``, ``_m1``, …), or from
    ``weights`` (a checkpoint in the same format). Missing files are downloaded only with ``download``.
    """
    rb = import_robustbench()
    import timm
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    ds, tm = _robustbench_names(dataset, threat_model)
    zoo_tm = ThreatModel(tm.value.replace("_3d", ""))  # RobustBench keeps 3D-corruption models under corruptions
    label = f"robustbench:{name}"
    entries = model_dicts[ds][zoo_tm]
    if name not in entries:
        elsewhere = [f"--dataset {d.value} --threat-model {t.value}" for d in model_dicts for t in model_dicts[d] if name in model_dicts[d][t]]
        close = difflib.get_close_matches(name, list(entries), n=3, cutoff=0.5)
        hint = f"; it is in the zoo for {' and for '.join(elsewhere)}" if elsewhere else ""
        hint += f"; did you mean {', '.join(close)}?" if close and not elsewhere else ""
        raise ValueError(
            f"{label} is not among RobustBench's {len(entries)} {ds.value} {zoo_tm.value} models{hint} "
            "(their names are those of RobustBench's leaderboards)"
        )
    classes = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}[ds.value]
    if num_classes is not None and num_classes != classes:
        raise ValueError(f"{label} has RobustBench's {classes}-class head for {ds.value}; drop --num-classes {num_classes}")
    timm_name = f"{name.lower().replace('-', '_')}_{ds.value}_{zoo_tm.value.lower()}"
    if timm.is_model(timm_name):
        raise ValueError(
            f"{label} is a timm model in this RobustBench version ({timm_name}), which robustkit does not load yet: "
            f"use --model timm:{timm_name}"
        )
    entry = entries[name]
    gdrive = entry["gdrive_id"]
    builtin = ds == BenchmarkDataset.imagenet and "Standard" in name  # built on torchvision's pretrained weights
    if gdrive is None and not builtin:
        raise ValueError(f"{label} has no download link in robustbench's zoo (gdrive_id None), so RobustBench cannot load it")
    ensemble = isinstance(gdrive, list)
    root = Path(model_dir).expanduser() if model_dir is not None else robustbench_dir()
    folder = root / ds.value / zoo_tm.value
    files = [folder / f"{name}.pt_m{i}.pt" for i in range(len(gdrive))] if ensemble else [folder / f"{name}.pt"]
    with contextlib.ExitStack() as stack:
        if weights is not None:
            if ensemble or builtin:
                what = f"an ensemble of {len(gdrive)} checkpoints" if ensemble else "built on torchvision's pretrained weights"
                raise ValueError(f"{label} is {what}: put its files in --model-dir's layout ({folder}) instead of --weights")
            source = Path(weights).expanduser()
            if not source.is_file():
                raise FileNotFoundError(f"weights file {source} does not exist")
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="robustkit-rb-")))
            files = [root / ds.value / zoo_tm.value / f"{name}.pt"]
            files[0].parent.mkdir(parents=True)
            files[0].symlink_to(source.resolve())
        missing = [] if builtin else [f for f in files if not f.is_file()]
        if missing and not download:
            raise WeightsNotFoundError(_missing_robustbench(label, name, ds.value, zoo_tm.value, missing, gdrive, root))
        stack.enter_context(_downloads(label, download))
        stack.enter_context(_pickles(unsafe_pickle))
        try:
            model = rb.utils.load_model(name, model_dir=str(root), dataset=ds.value, threat_model=tm.value)
        except (WeightsNotFoundError, CheckpointError):
            raise
        except Exception as err:  # RobustBench's loader raises many types for foreign or truncated files
            where = str(files[0] if weights is None else weights)
            first = (str(err).strip().splitlines() or [""])[0][:200]
            hint = "; if you trust the file pass --unsafe-pickle" if "weights_only" in str(err).lower() else ""
            raise CheckpointError(
                f"RobustBench's loader could not load {label} from {where} ({type(err).__name__}: {first}){hint}"
            ) from err
    steps = ROBUSTBENCH_PREPROCESSING.get(entry.get("preprocessing")) if ds == BenchmarkDataset.imagenet else {}
    origin = f"RobustBench's preprocessing {entry.get('preprocessing')!r} for {name}" if ds == BenchmarkDataset.imagenet else "RobustBench (CIFAR images as they are)"
    return attach(model.eval(), _spec_from_steps(steps or {}, DATASET_SHAPES[ds.value], origin))


def _missing_robustbench(
    label: str, name: str, dataset: str, threat: str, missing: list[Path], gdrive: Any, root: Path
) -> str:
    ids = gdrive if isinstance(gdrive, list) else [gdrive]
    files = ", ".join(str(f) for f in missing)
    fetch = (
        f"python -c \"import robustkit as rk; rk.load_model('robustbench:{name}', dataset='{dataset}', "
        f"threat_model='{threat}', download=True)\""
    )
    return (
        f"{label}: {files} {'is' if len(missing) == 1 else 'are'} missing (RobustBench's layout under --model-dir {root}: "
        f"<dataset>/<threat_model>/<name>.pt); RobustBench downloads {'it' if len(missing) == 1 else 'them'} from "
        f"Google Drive with gdown (file id {', '.join(map(str, ids))}): pass --download, or run `{fetch}` on a machine "
        f"with internet and copy {robustbench_dir() / dataset / threat} from there to {missing[0].parent}"
    )


# ---------------------------------------------------------------- timm


def _close(name: str, names: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(names), n=3, cutoff=0.6)
    return f"; did you mean {', '.join(close)}?" if close else ""


def _timm_cached(cfg: Any) -> Path | None:
    """The pretrained file of timm config ``cfg`` in timm's caches (Hugging Face, then torch's hub folder)."""
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        for filename in [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]:
            found = try_to_load_from_cache(cfg.hf_hub_id, filename)
            if isinstance(found, str):
                return Path(found)
    if cfg.url:
        path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(cfg.url).path)
        if path.is_file():
            return path
    return None


def timm_model(
    name: str, *, weights: str | Path | None = None, num_classes: int | None = None, download: bool = False
) -> nn.Module:
    """timm's ``name`` (optionally ``arch.tag``) with its pretrained weights from timm's caches (or
    ``weights``, a state_dict), its pretrained config's mean/std as the first layer, in eval mode.
    ``num_classes``: a new, untrained head of that size (timm drops the pretrained one)."""
    timm = require("timm")
    from timm.models import get_pretrained_cfg

    label = f"timm:{name}"
    if not timm.is_model(name):
        raise ValueError(f"{label}: timm has no model {name.partition('.')[0]!r}{_close(name, timm.list_models())}")
    try:
        cfg = get_pretrained_cfg(name)
    except RuntimeError:
        tags = timm.list_pretrained(f"{name.partition('.')[0]}.*")
        raise ValueError(f"{label}: timm has no pretrained tag {name.partition('.')[2]!r}; its tags: {', '.join(tags) or 'none'}") from None
    extra = {} if num_classes is None else {"num_classes": num_classes}
    if weights is not None:
        net = timm.create_model(name, pretrained=False, **extra)
        _load_weights(net, weights, label)
    else:
        found = _timm_cached(cfg) if cfg is not None else None
        if found is None and not download:
            raise WeightsNotFoundError(_missing_timm(label, name, cfg))
        overlay = {"file": str(found)} if found is not None else None
        with _downloads(label, download):
            net = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **extra)
    c = net.pretrained_cfg
    _, h, w = c["input_size"]
    pct = c.get("crop_pct") or 1.0
    resize = math.floor(h / pct) if h == w else (math.floor(h / pct), math.floor(w / pct))
    spec = InputSpec(
        tuple(c["input_size"]), resize, h if h == w else None, c.get("interpolation") or "bilinear",
        f"timm's pretrained_cfg of {name} (input_size, crop_pct {pct}, {c.get('interpolation')})",
    )  # fmt: skip
    return attach(with_normalization(net.eval(), c["mean"], c["std"]).eval(), spec)


def _missing_timm(label: str, name: str, cfg: Any) -> str:
    where = []
    if cfg is not None and cfg.hf_hub_id:
        from huggingface_hub import constants

        folder = "models--" + cfg.hf_hub_id.replace("/", "--")
        where.append(f"{Path(constants.HF_HUB_CACHE) / folder} (Hugging Face Hub {cfg.hf_hub_id})")
    if cfg is not None and cfg.url:
        where.append(str(Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(cfg.url).path)))
    if not where:
        return f"{label}: timm has no pretrained weights for {name}; pass --weights with a state_dict"
    return (
        f"{label}: its pretrained weights are not in timm's caches ({' or '.join(where)}); timm downloads them in "
        f"`timm.create_model('{name}', pretrained=True)`: pass --download, or run that on a machine with internet and "
        "copy the cache folder here, or pass --weights with a state_dict"
    )


# ---------------------------------------------------------------- torchvision


def torchvision_model(
    name: str, *, weights: str | Path | None = None, num_classes: int | None = None, download: bool = False
) -> nn.Module:
    """torchvision's classifier ``name`` (optionally ``arch.WEIGHTS``, default the DEFAULT weights) with
    those weights from torch's hub cache (or ``weights``, a state_dict), the weights' transforms' mean/std
    as the first layer, in eval mode. ``num_classes``: a new, untrained last layer of that size."""
    import torchvision
    from torchvision import models

    label = f"torchvision:{name}"
    arch, _, tag = name.partition(".")
    names = models.list_models(module=torchvision.models)
    if arch not in names:
        raise ValueError(f"{label}: torchvision has no classification model {arch!r}{_close(arch, names)}")
    enum = models.get_model_weights(arch)
    if tag and tag not in enum.__members__:
        raise ValueError(f"{label}: {enum.__name__} has no {tag!r}; valid: {', '.join(enum.__members__)}")
    chosen = enum[tag] if tag else enum.DEFAULT
    categories = len(chosen.meta["categories"])
    if weights is not None:
        net = models.get_model(arch, weights=None, num_classes=num_classes or categories)
        _load_weights(net, weights, label)
    else:
        file = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(chosen.url).path)
        if not file.is_file() and not download:
            raise WeightsNotFoundError(
                f"{label}: its weights {chosen} are not at {file} (torch's hub cache, $TORCH_HOME); torchvision "
                f"downloads them from {chosen.url}: pass --download, or run `python -c \"import torchvision; "
                f"torchvision.models.get_model('{arch}', weights='{chosen}')\"` on a machine with internet and copy the "
                "file there, or pass --weights with a state_dict"
            )
        with _downloads(label, download):
            net = models.get_model(arch, weights=chosen)
        if num_classes is not None and num_classes != categories:
            _new_head(net, categories, num_classes, label)
    t = chosen.transforms()
    crop, resize = int(t.crop_size[0]), int(t.resize_size[0])
    spec = InputSpec((3, crop, crop), resize, crop, t.interpolation.value, f"torchvision's {chosen}.transforms()")
    return attach(with_normalization(net.eval(), list(t.mean), list(t.std)).eval(), spec)


def _new_head(net: nn.Module, old: int, new: int, label: str) -> None:
    """Replace the last layer with ``old`` outputs (an nn.Linear, or a 1×1 nn.Conv2d as in SqueezeNet)
    by a fresh one with ``new``."""
    found = None
    for qualified, module in net.named_modules():
        if (isinstance(module, nn.Linear) and module.out_features == old) or (
            isinstance(module, nn.Conv2d) and module.out_channels == old and module.kernel_size == (1, 1)
        ):
            found = (qualified, module)
    if found is None:
        raise ValueError(f"{label}: no last layer with {old} outputs to replace for --num-classes {new}")
    qualified, module = found
    parent_name, _, child = qualified.rpartition(".")
    parent = net.get_submodule(parent_name) if parent_name else net
    if isinstance(module, nn.Linear):
        fresh: nn.Module = nn.Linear(module.in_features, new, bias=module.bias is not None)
    else:
        fresh = nn.Conv2d(module.in_channels, new, 1, bias=module.bias is not None)
    setattr(parent, child, fresh)


def _load_weights(net: nn.Module, weights: str | Path, label: str) -> None:
    """A state_dict file into ``net``: its own keys, or those of the normalised model robustkit returns
    (``normalize.*`` and ``net.*``, as ``model.state_dict()`` of a loaded model gives them)."""
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    state = state_dict_of(read_weights(path), path)
    if any(k.startswith("normalize.") for k in state):
        state = {k[len("net.") :]: v for k, v in state.items() if k.startswith("net.")}
    load_state(net, state, path, label)


def named_model(kind: str, name: str, **options: Any) -> nn.Module:
    """The model of source ``kind`` (`SOURCES`) named ``name``; ``options`` as the source's loader takes
    them (``dataset``, ``threat_model``, ``model_dir``, ``unsafe_pickle`` for RobustBench only)."""
    rb_only = {k: options.pop(k) for k in ("dataset", "threat_model", "model_dir", "unsafe_pickle") if k in options}
    if kind == "robustbench":
        return robustbench_model(name, **rb_only, **options)
    given = [f"{k}={v!r}" for k, v in rb_only.items() if k in ("threat_model", "model_dir") and v is not None]
    if given:
        raise ValueError(f"{', '.join(given)} applies to robustbench: models, not {kind}:{name}; drop it")
    return (timm_model if kind == "timm" else torchvision_model)(name, **options)
