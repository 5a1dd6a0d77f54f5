"""`rbe compare A B --html OUT` and `--format csv`: per-unit differences and the side-by-side page."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import run_fixtures as fx  # noqa: E402

from rolebench_eval.cli import main  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
VOID = {"meta", "br", "input", "img", "hr", "link"}


@pytest.fixture
def runs(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "results"
    base = fx.persona_values(n=12, seed=1)
    better = fx.persona_values(base=base, shift=0.3, seed=2)
    items = fx.rolebench_values(n=9)
    a = fx.write_run(root, "model-a__personagym-light__aaaa", [fx.personagym_task(base), fx.rolebench_task(items)], model="model-a")
    b = fx.write_run(root, "model-b__personagym-light__bbbb",
                     [fx.personagym_task(better), fx.rolebench_task(fx.rolebench_values(base=items, shift=0.1))], model="model-b")
    # b answers in its own words, so the page must show both runs' texts.
    samples = b / "samples.jsonl"
    records = [json.loads(line) for line in samples.read_text().splitlines()]
    for record in records:
        record["answer"] = f"B-ANSWER for {record['sample_id']}"
    samples.write_text("".join(json.dumps(r) + "\n" for r in records))
    other = fx.write_run(root, "model-c__personagym-light__cccc", [fx.personagym_task(base, judges=("gpt-4o-mini",))], model="model-c")
    return {"a": a, "b": b, "other": other, "root": root}


def _per_unit(path: Path, task: str) -> dict:
    return json.loads((path / "results.json").read_text())["tasks"][task]["per_unit"]


def test_csv_lists_every_units_difference_largest_first(runs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", str(runs["a"]), str(runs["b"]), "--format", "csv"]) == 0
    frame = pd.read_csv(io.StringIO(capsys.readouterr().out))
    ea = frame[frame.metric == "personagym-light/EA"]
    a, b = _per_unit(runs["a"], "personagym-light"), _per_unit(runs["b"], "personagym-light")
    assert len(ea) == 12
    for row in ea.itertuples():
        assert row.value_a == a[row.unit]["EA"] and row.value_b == b[row.unit]["EA"]
        assert row.diff == pytest.approx(b[row.unit]["EA"] - a[row.unit]["EA"])
    assert list(ea.abs_diff) == sorted(ea.abs_diff, reverse=True)
    # Verdicts as win 1, tie 0.5, loss 0; ROUGE per item.
    wins = frame[frame.metric == "rolebench-en/win_rate_tie_adjusted"]
    assert set(wins.value_a) <= {0.0, 0.5, 1.0} and len(wins) == 9
    assert len(frame[frame.metric == "rolebench-en/CUS"]) == 3


def test_html_shows_both_answers_of_the_top_unit(runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sbs" / "page.html"
    assert main(["compare", str(runs["a"]), str(runs["b"]), "--html", str(out), "--top", "3", "--resamples", "99"]) == 0
    captured = capsys.readouterr()
    assert "personagym-light/EA" in captured.out and f"wrote {out}" in captured.err
    html = out.read_text()
    a, b = _per_unit(runs["a"], "personagym-light"), _per_unit(runs["b"], "personagym-light")
    top = max(a, key=lambda unit: abs(b[unit]["EA"] - a[unit]["EA"]))
    index = list(a).index(top)
    expected_a = fx.HOSTILE_ANSWER if index == 0 else f"As {top[:20]}, I would answer question {index} calmly."
    section = html.split('data-metric="personagym-light/EA"')[2]  # the first unit of EA (after the <section>)
    section = section.split("</details>")[0]
    assert top in section and f"B-ANSWER for p{index:03d}-EA-q0" in section
    assert expected_a.replace("&", "&amp;").replace('"', "&#34;").replace("<", "&lt;").replace(">", "&gt;") in section
    assert f"the final score is {a[top]['EA']}" in section and f"the final score is {b[top]['EA']}" in section
    # Three units per metric, 6 PersonaGym + 5 RoleBench metrics (CUS/RAW/SPE have 3 items each).
    assert html.count('<details class="unit"') == 6 * 3 + 5 * 3
    assert html.count("<script>") == 1 and "&lt;script&gt;document.title=" in html  # hostile text stays text
    assert "Paired statistics" in html


class _Structure(HTMLParser):
    """A browser-free check: every element closes in order, and the filters' targets exist."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.options: dict[str, list[str]] = {}
        self.unit_metrics: set[str] = set()
        self.ids: set[str] = set()
        self._select: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if values.get("id"):
            self.ids.add(str(values["id"]))
        if tag == "select":
            self._select = values.get("id")
        if tag == "option" and self._select:
            self.options.setdefault(self._select, []).append(values.get("value") or "")
        if tag == "details" and values.get("class") == "unit":
            self.unit_metrics.add(str(values.get("data-metric")))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
            return
        self.stack.pop()


def test_page_parses_and_its_filters_have_targets(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "page.html"
    assert main(["compare", str(runs["a"]), str(runs["b"]), "--format", "csv", "--html", str(out)]) == 0
    parser = _Structure()
    parser.feed(out.read_text())
    parser.close()
    assert parser.errors == [] and parser.stack == []
    assert {"sbs-search", "sbs-metric", "sbs-direction", "sbs-count", "js-status"} <= parser.ids
    assert set(parser.options["sbs-metric"]) - {""} == parser.unit_metrics
    assert set(parser.options["sbs-direction"]) == {"", "worse", "better", "same"}


def test_not_comparable_runs_are_refused_like_compare(runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "page.html"
    for extra in (["--html", str(out)], ["--format", "csv"]):
        assert main(["compare", str(runs["a"]), str(runs["other"]), *extra]) == 2
        assert "are not comparable" in capsys.readouterr().err
    assert not out.exists()
    assert main(["compare", str(runs["a"]), str(runs["other"]), "--format", "csv", "--html", str(out), "--allow-mismatch"]) == 0
    assert "not comparable" in out.read_text() and "judge set differs" in out.read_text()
    assert main(["compare", str(runs["a"]), str(runs["b"]), str(runs["other"]), "--html", str(out)]) == 2
    assert "exactly two runs" in capsys.readouterr().err


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs headless Chromium at /usr/bin/chromium")
def test_page_script_runs_in_chromium(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "page.html"
    assert main(["compare", str(runs["a"]), str(runs["b"]), "--format", "csv", "--html", str(out), "--top", "3"]) == 0
    result = subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
         "--dump-dom", out.as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'data-js="rbe-side-by-side-ready"' in result.stdout and "Uncaught" not in result.stderr
    assert "33 of 33 units shown" in result.stdout
    assert "<title>pwned</title>" not in result.stdout
