"""One quantity, one value: every recipe report states each table's image count, gives a quantity
one value per image count, shows shares at one precision and says on how many images each
sanity check was measured (issue 23). The checkers run on every recipe's digits report in
tests/test_recipes_cli.py (test_recipe_on_digits)."""

import re

COUNT = re.compile(r"\b(\d+(?: \d{3})*)(?:-image\b|\s+(?:[\w'-]+\s+){0,3}?(?:images|examples)\b)")
SHARE = re.compile(r"^-?\d*\.\d+$")
NUMBER = re.compile(r"^-?\d+(?:\.\d*)?$")
EXEMPT_COLUMNS = ("write-up", "budget", "median")  # budgets k/255, and the write-up's own precision
SAME = {  # names of one thing under different labels
    "baseline": "undefended", "none": "undefended", "no defense": "undefended", "standard": "undefended",
    "clean accuracy": "clean",
}  # fmt: skip


def tables(report: str) -> list[dict]:
    """Every Markdown table of ``report``: its section heading, the prose between the heading and
    the table (its caption), header cells and rows."""
    out, heading, prose, lines = [], "", [], report.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading, prose = line.lstrip("# "), []
        elif line.startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            header = _cells(line)
            rows = []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            out.append({"heading": heading, "caption": " ".join(prose), "header": header, "rows": rows})
            prose = []
            continue
        elif line.strip():
            prose.append(line)
        i += 1
    return out


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _name(text: str) -> str:
    text = re.sub(r"\s*\([^)]*\d[^)]*\)", "", text.lower()).strip()  # a count in brackets is not the name
    return SAME.get(text, text)


def count_of(table: dict) -> str | None:
    """The image count a table states in its heading, caption or header (``None``: none)."""
    for text in (table["heading"], " ".join(table["header"]), table["caption"]):
        found = COUNT.search(text)
        if found:
            return found.group(1).replace(" ", "")
    return None


def report_problems(report: str) -> list[str]:
    """What breaks one quantity, one value in ``report`` (empty: nothing)."""
    problems, seen = [], {}  # seen: (row, column, image count) -> (value, table heading)
    for t in tables(report):
        if t["heading"] == "Sanity checks":
            continue
        count = count_of(t)
        if count is None:
            problems.append(f"the table under '{t['heading']}' ({' | '.join(t['header'])}) states no image count")
        shares = {j for row in t["rows"] for j, cell in enumerate(row) if j and SHARE.match(cell)}
        for row in t["rows"]:
            for j, (column, cell) in enumerate(zip(t["header"], row, strict=False)):
                if j not in shares or not NUMBER.match(cell) or any(w in column.lower() for w in EXEMPT_COLUMNS):
                    continue  # a column of shares: each of its numbers at three decimals (0.000, not 0)
                if len(cell.partition(".")[2]) != 3:
                    problems.append(f"'{t['heading']}': {row[0]} / {column} = {cell}, not at three decimals")
                key = (*sorted((_name(row[0]), _name(column))), count)  # a row or a column: the same thing
                if key in seen and seen[key][0] != cell:
                    problems.append(
                        f"{row[0]} / {column} is {seen[key][0]} under '{seen[key][1]}' and {cell} under "
                        f"'{t['heading']}', on {count} images both"
                    )
                seen.setdefault(key, (cell, t["heading"]))
    return problems


def check_counts(report: str, results: dict) -> list[str]:
    """The sanity checks measured on a sample whose name does not say so: every check's name
    must state on how many images it ran (``n`` in its values), or the report's test-set size."""
    problems = []
    for check in results["checks"]:
        n = check["values"].get("n")
        stated = COUNT.findall(check["name"])
        if n is not None and str(n) not in [s.replace(" ", "") for s in stated]:
            problems.append(f"check {check['name']} ran on {n} images and its name does not say so")
        if check["name"] not in report:
            problems.append(f"check {check['name']} is not in the report")
    return problems


# ---------------------------------------------------------------- the checker can fail


GOOD = """# A recipe

## Clean accuracy (all 450 test images)

|  | undefended |
|---|---|
| clean accuracy | 0.980 |

## Accuracy (the 200 attacked test images)

| model | clean (200 images) | pgd |
|---|---|---|
| baseline | 0.975 | 0.565 |
| distilled | 0.970 | 0.745 |
"""


def test_the_checker_passes_a_report_that_labels_its_subsets():
    assert report_problems(GOOD) == []
    assert _name("Clean (200 images)") == "clean" and _name("AE, adaptive (BPDA)") != _name("AE, adaptive (through the AE)")
    assert [count_of(t) for t in tables(GOOD)] == ["450", "200"]


def test_the_checker_finds_a_quantity_with_two_values_an_uncounted_table_and_a_loose_precision():
    two = GOOD.replace("(the 200 attacked test images)", "(all 450 test images)").replace("clean (200 images)", "clean")
    assert any("0.980 under 'Clean accuracy" in p and "0.975 under 'Accuracy" in p for p in report_problems(two))
    uncounted = GOOD.replace("## Accuracy (the 200 attacked test images)", "## Accuracy").replace(" (200 images)", "")
    assert report_problems(uncounted) == ["the table under 'Accuracy' (model | clean | pgd) states no image count"]
    loose = GOOD.replace("0.565", "0.5650").replace("| 0.970 |", "| 1 |")
    assert report_problems(loose) == [
        "'Accuracy (the 200 attacked test images)': baseline / pgd = 0.5650, not at three decimals",
        "'Accuracy (the 200 attacked test images)': distilled / clean (200 images) = 1, not at three decimals",
    ]


def test_check_counts_wants_the_sample_in_the_name():
    results = {"checks": [{"name": "model_learned", "values": {"n": 256}}]}
    assert check_counts("model_learned", results) == ["check model_learned ran on 256 images and its name does not say so"]
    results["checks"][0]["name"] = "model_learned (256-image sample)"
    assert check_counts("| model_learned (256-image sample) |", results) == []
