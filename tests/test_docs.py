"""The docs build strictly (no network) from a fresh run of every recipe."""

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_docs_build_strict(tmp_path):
    docs = tmp_path / "docs"
    committed = subprocess.run(["git", "ls-files", "docs"], capture_output=True, text=True, cwd=ROOT).stdout.split()
    for name in committed:  # the docs as a fresh clone has them, without generated pages
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    spec = importlib.util.spec_from_file_location("build_examples", ROOT / "docs" / "build_examples.py")
    build_examples = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_examples)
    build_examples.main(["--quick", "--docs-dir", str(docs)])
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    config["docs_dir"] = str(docs)
    config["plugins"][1]["mkdocstrings"]["handlers"]["python"]["paths"] = [str(ROOT)]
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config, allow_unicode=True))
    site = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(tmp_path / "mkdocs.yml"), "-d", str(tmp_path / "site")],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert site.returncode == 0, site.stderr[-3000:]
    page = (tmp_path / "site" / "examples" / "fgsm-sweep" / "index.html").read_text()
    assert (
        'src="eps_curve.png"' in page
        and (tmp_path / "site" / "examples" / "fgsm-sweep" / "eps_curve.png").stat().st_size > 1000
    )
    for name, figure in (("ae-purification", "purification.png"), ("defense-matrix", "matrix.png")):
        assert f'src="{figure}"' in (tmp_path / "site" / "examples" / name / "index.html").read_text()
    for folder in (tmp_path / "site" / "examples").iterdir():  # every worked example shows its figures ...
        if folder.is_dir() and (docs / "examples" / f"{folder.name}.md").is_file():
            page = (folder / "index.html").read_text()
            shown = re.findall(r'<img [^>]*src="([^"/]+\.png)"', page)
            assert shown and all((folder / src).stat().st_size > 1000 for src in shown), folder.name
            assert "What to look at." in page, folder.name  # ... and says what to look at in them
    assert "agreement" in (tmp_path / "site" / "backends" / "index.html").read_text().lower()
    assert "attack_table" in (tmp_path / "site" / "api" / "index.html").read_text()
    reference = (tmp_path / "site" / "reference" / "index.html").read_text()
    assert "random_start" in reference and "arxiv.org/abs/1706.06083" in reference and "feature_squeezing" in reference
    assert "robustkit run fgsm-sweep [OPTIONS]" in (tmp_path / "site" / "cli" / "index.html").read_text()
    evaluate = (tmp_path / "site" / "evaluate" / "index.html").read_text()
    assert 'id="scaling-out"' in evaluate and "Far OOD: fakedata" in evaluate and 'src="../examples/eval/ood_auroc.png"' in evaluate
    assert "robustkit eval [OPTIONS]" in (tmp_path / "site" / "cli" / "index.html").read_text()


LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)


def _generated() -> set[str]:
    """Pages and folders `make docs` writes (docs/build_examples.py) before mkdocs builds the site: links to them
    are checked by test_docs_build_strict's mkdocs build, not here."""
    from robustkit.app.recipes import recipes

    names = {"cli.md", "reference.md", "generated", "examples/eval"}
    return names | {f"examples/{n}.md" for n in recipes()} | {f"examples/{n}" for n in recipes()}


def relative_links(text: str) -> list[str]:
    """Relative link targets of a Markdown text (links and images), outside code, without their anchors."""
    text = FENCE.sub("", text)
    text = re.sub(r"`[^`\n]*`", "", text)
    targets = [m.group(1) for m in LINK.finditer(text)]
    return [t.split("#")[0] for t in targets if not re.match(r"^([a-z][a-z0-9+.-]*:|#|/)", t, re.I)]


def test_relative_links_parse():
    text = "[a](b.md) ![f](img/x.png \"t\") [c](https://x.org/d.md) [e](#top) [g](h.md#sec)\n`[i](j.md)`\n```\n[k](l.md)\n```"
    assert relative_links(text) == ["b.md", "img/x.png", "h.md"]


def test_docs_link_only_pages_that_exist():
    """Every relative link in README.md, docs/*.md and docs/examples/* names a file of the source tree (or a page
    the docs build generates); anchors aside."""
    generated = _generated()
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "docs" / "examples").glob("*.md"))]
    committed = set(subprocess.run(["git", "ls-files"], capture_output=True, text=True, cwd=ROOT).stdout.split())
    pages = [p for p in pages if str(p.relative_to(ROOT)) in committed]  # not the generated pages themselves
    broken = []
    for page in pages:
        for target in relative_links(page.read_text()):
            if not target:
                continue
            path = (page.parent / target).resolve()
            in_docs = path.is_relative_to(ROOT / "docs") and str(path.relative_to(ROOT / "docs"))
            if path.exists() or (in_docs and any(in_docs == g or in_docs.startswith(g + "/") for g in generated)):
                continue
            broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert len(pages) > 10 and not broken, broken


# ---------------------------------------------------------------- the docs say what the code does (issue 30, item 7)

DOCS = ROOT / "docs"
WORDS = {"seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12}


def _row(page: str, first_cell: str) -> list[str]:
    """The cells of the Markdown table row of ``page`` whose first cell is ``first_cell``."""
    for line in (DOCS / page).read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in docs/{page}")


def _ticked(text: str) -> list[str]:
    return re.findall(r"`([^`]+)`", text)


def test_the_evaluate_page_lists_the_defaults_the_code_runs():
    from robustkit.app.cli import DEFAULT_DETECTORS_TEXT
    from robustkit.evaluate.benchmark import DEFAULT_DETECTORS, OOD_SETS, THREATS, eps_text
    from robustkit.registry import attack

    assert _ticked(_row("evaluate.md", "detectors")[1]) == list(DEFAULT_DETECTORS) == DEFAULT_DETECTORS_TEXT.split(", ")
    names = {"CIFAR-10": "cifar10", "CIFAR-100": "cifar100", "Tiny ImageNet": "tinyimagenet", "MNIST": "mnist",
             "SVHN": "svhn", "Textures": "textures", "Places365": "places365", "Fashion-MNIST": "fashionmnist",
             "notMNIST (no loader: skipped)": "notmnist"}  # fmt: skip
    for dataset, label in (("cifar10", "CIFAR-10"), ("cifar100", "CIFAR-100"), ("mnist", "MNIST")):
        cell = _row("evaluate.md", f"OOD sets for {label}")[1]
        listed = dict(part.split(": ", 1) for part in cell.split("; "))
        assert {g: tuple(names[n] for n in sets.split(", ")) for g, sets in listed.items()} == OOD_SETS[dataset]
    attacks = [n for n in _ticked(_row("evaluate.md", "attack")[1]) if n.startswith("autoattack")]
    assert attacks == [THREATS[n][0] for n in ("linf", "l2", "l1")]
    budget = _row("evaluate.md", "budget")[1]
    for norm, (name, eps) in THREATS.items():
        assert f"ε = {eps_text(eps, norm)}" in budget and f"`--norm {norm}`" in budget
        row = _row("evaluate.md", f"`{norm}`" + (" (default)" if norm == "linf" else ""))
        assert row[1] == f"`{name}`" and row[2] == eps_text(eps, norm)
    standard = [c.upper() if c != "square" else "Square" for c in attack("autoattack").component_labels()]
    assert re.findall(r"(APGD-CE|APGD-T|FAB-T|Square)", _row("evaluate.md", "`linf` (default)")[3]) == standard
    readme = (ROOT / "README.md").read_text()
    assert f"AutoAttack at {eps_text(THREATS['linf'][1], 'linf')} L∞" in readme


def test_the_evaluate_page_names_every_check_eval_runs():
    """The checks `benchmark` runs (a PGD threat model: all but the official AutoAttack's flags) are the ones
    docs/evaluate.md lists, and the sample size it gives is the default."""
    import inspect

    from robustkit.evaluate import benchmark
    from robustkit.modelling.data import load_dataset

    text = (DOCS / "evaluate.md").read_text()
    paragraph = text[text.index("**Sanity checks.**") : text.index("[Sanity checks](checks.md) says what each")]
    listed = set(_ticked(paragraph))
    sample = inspect.signature(benchmark).parameters["check_sample"].default
    assert f"seeded sample of {sample} test images" in " ".join(paragraph.split())
    test = load_dataset("digits", "test", limit=16)
    train = load_dataset("digits", "train", limit=64)  # every class: mahalanobis fits on it
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    result = benchmark(net, test, train=train, attack="pgd", eps=0.1, attack_params={"steps": 1},
                       detectors=["energy", "mahalanobis"], ood={"far": {"noise": torch.rand(16, 1, 8, 8)}}, check_sample=8)  # fmt: skip
    ran = {c.name.split(" (")[0] for c in result.checks}
    assert ran == listed - {"autoattack_flags"} and "autoattack_flags" in listed


def test_the_checks_page_lists_the_checks_the_code_defines():
    from robustkit.evaluate import checks
    from robustkit.evaluate.diagnose import CHECKS

    text = (DOCS / "checks.md").read_text()
    helpers = ("noise_tolerance", "warn_problems", "contract_checks")  # not checks: tools and a runner of four
    defined = {n for n in checks.__all__ if n[0].islower() and n not in helpers}
    alias = {"ood_saturation": "ood_saturated"}  # the section says "OOD saturation"
    table = text[text.index("| family | module | checks |") : text.index("Every check returns")]
    listed: dict[str, set[str]] = {}
    for line in table.splitlines()[2:]:
        if line.startswith("|"):
            module = _ticked(line.split("|")[2])[0]
            anchors = re.findall(r"\]\(#([a-z-]+)\)", line.split("|")[3])
            names = {alias.get(a.replace("-", "_"), a.replace("-", "_")) for a in anchors}
            listed[module] = names - {"which_features_the_feature_detectors_read"}
    assert set().union(*listed.values()) == defined
    for module, names in listed.items():
        assert {getattr(checks, n).__module__ for n in names} == {f"robustkit.evaluate.checks.{module}"}, module
    diagnose_table = text[text.index("| check | when | cost |") : text.index("So at most")]
    rows = [line.split("|")[1] for line in diagnose_table.splitlines()[2:] if line.startswith("|")]
    listed_diagnose = [a.replace("-", "_") for row in rows for a in re.findall(r"\]\(#([a-z-]+)\)", row)]
    assert sorted(listed_diagnose) == sorted(CHECKS)  # each once; the table orders them by cost
    benchmarks = (DOCS / "benchmarks.md").read_text()
    assert f"{len(CHECKS)} checks" in benchmarks


def test_recipe_names_and_counts_in_the_docs_are_the_recipes():
    from robustkit.app.recipes import recipes

    names = list(recipes())
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| recipe | experiment |") :].split("\n\n")[0]
    assert [_ticked(line)[0] for line in table.splitlines()[2:]] == names
    examples = (DOCS / "examples" / "index.md").read_text()
    assert re.findall(r"^\| \[([a-z-]+)\]\(\1\.md\)", examples, flags=re.M) == names
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    worked = next(item["Worked examples"] for item in nav if isinstance(item, dict) and "Worked examples" in item)
    assert [next(iter(e.values())) for e in worked[1:]] == [f"examples/{n}.md" for n in names]
    for page in (ROOT / "README.md", DOCS / "getting-started.md", DOCS / "index.md"):
        for word in re.findall(r"\b(?:all|the) (\w+) recipes\b", page.read_text()):
            if word.lower() in WORDS:
                assert WORDS[word.lower()] == len(names), (page.name, word)


def test_the_lists_of_corruptions_certification_parameters_and_the_cifar_profile_are_the_codes():
    from robustkit.app.runner import PROFILES
    from robustkit.evaluate.certify import PARAMETERS
    from robustkit.modelling.corruptions import CIFAR10C_CONSTANTS, CORRUPTIONS

    corruptions = (DOCS / "corruptions.md").read_text()
    intro = corruptions[corruptions.index("The 15 corruptions") : corruptions.index("## Where")]
    assert sorted(_ticked(intro)) == sorted(CORRUPTIONS) and len(CORRUPTIONS) == 15
    noise = CIFAR10C_CONSTANTS["gaussian_noise"]
    assert f"CIFAR-10-C's {noise[0]:.2f} … {noise[-1]:.2f}" in " ".join(corruptions.split())
    labels = {"sigma": "`sigma` (σ)", "n0": "`n0`", "n": "`n`", "alpha": "`alpha` (α)"}
    for name, paper, _ in PARAMETERS:
        if name in labels:
            assert _row("certify.md", labels[name])[1] == paper, name
    profile = PROFILES["natural"]
    text = " ".join((DOCS / "getting-started.md").read_text().split())
    config = profile.train
    assert f"for {config.epochs} epochs on all training images" in text and config.patience is None
    optimizer, lr, decay = re.search(r"(\w+) \(lr ([\d.e-]+), weight decay ([\d.e-]+)\)", text).groups()
    assert (optimizer.lower(), float(lr), float(decay)) == (config.optimizer, config.lr, config.weight_decay)
    assert config.schedule == "onecycle" and "one-cycle" in text and config.augment and "random crop and flip" in text
    assert f"first {profile.test_limit} test images" in text


def test_numbers_the_docs_derive_from_formulas_match_the_code():
    from robustkit.defenses.smoothing import max_radius
    from robustkit.evaluate import certified_vs_empirical, noise_tolerance, ood_auroc

    certify = " ".join((DOCS / "certify.md").read_text().split())
    caps = re.findall(r"([\d.]+)σ at (?:n = )?([\d ]+?)(?=[,(])", certify)
    assert len(caps) == 4
    for factor, n in caps:
        assert f"{max_radius(1.0, int(n.replace(' ', '')), 0.001):.2f}" == factor
    checks = " ".join((DOCS / "checks.md").read_text().split())
    assert "accuracies 50%, 30%, 45% at ε = 0.05, 0.1, 0.2 on 256 points: a 15-point rise against a tolerance of 8.5 points" in checks
    assert f"{100 * noise_tolerance(0.30, 0.45, 256):.1f}" == "8.5"
    assert "±0.082 for 100 and 100 images" in checks
    assert ood_auroc(0.581, n_id=100, n_ood=100).status == "warn" and ood_auroc(0.583, n_id=100, n_ood=100).status == "pass"
    assert "certified 0.70 against empirical 0.50 at a radius warns and 0.80 fails; 0.52 against 0.50 passes" in checks
    for certified, status in ((0.70, "warn"), (0.80, "fail"), (0.52, "pass")):
        assert certified_vs_empirical([0.5], [certified], [0.50], 100).status == status
    benchmarks = " ".join((DOCS / "benchmarks.md").read_text().split())
    from robustkit.app.recipes import load_recipe

    grid = [float(e) for e in load_recipe("fgsm-sweep").GRID.split(",")]
    n = sum(e > 0 for e in grid)
    assert f"is {(3 * n + 1) / (n + 2):.1f}× for the default {len(grid)}-point grid" in benchmarks


PUBLIC = ("robustkit", "robustkit.evaluate")


def test_the_docs_import_only_public_api():
    """Code on README.md and docs/*.md imports from robustkit and robustkit.evaluate only (the layers' modules
    are internal), and every name it imports is there."""
    import importlib

    pages = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
    found = []
    for page in pages:
        for module, names in re.findall(r"from (robustkit[\w.]*) import ([\w, ]+)", page.read_text()):
            found.append((page.name, module, [n.strip() for n in names.split(",")]))
        for module in re.findall(r"^\s*import (robustkit[\w.]*)", page.read_text(), flags=re.M):
            found.append((page.name, module, []))
    assert found, "no imports found: the pattern is wrong"
    private = [(page, module) for page, module, _ in found if module not in PUBLIC]
    assert not private, private
    for page, module, names in found:
        for name in names:
            assert hasattr(importlib.import_module(module), name), (page, module, name)
