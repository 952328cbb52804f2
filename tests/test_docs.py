"""The docs build strictly (no network) from a fresh run of every recipe."""

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

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
