"""Every sample of a run on paginated pages linked from report.html (html_pages.py), and the
pandas-free chart numbers (html_charts.py)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import run_fixtures as fx  # noqa: E402

from rolebench_eval.analysis import html_pages, html_report  # noqa: E402
from rolebench_eval.analysis.html_charts import PALETTE, Series, distribution_chart  # noqa: E402
from rolebench_eval.analysis.run_samples import iter_samples  # noqa: E402

HREF = re.compile(r'href="([^"#]+)(#[^"]*)?"')


def _run(tmp_path: Path, personas: int = 23, items: int = 7) -> Path:
    """A run of two tasks: `personas` PersonaGym-Light samples, then `items` RoleBench samples."""
    tasks = [fx.personagym_task(fx.persona_values(n=personas, seed=1)), fx.rolebench_task(fx.rolebench_values(n=items))]
    return fx.write_run(tmp_path / "results", "model-a__two-tasks__aaaa", tasks)


def _ids_on(page: Path) -> list[str]:
    return re.findall(r'<span class="sid">([^<]*)</span>', page.read_text(encoding="utf-8"))


def test_every_sample_is_on_exactly_one_page_linked_from_the_report(tmp_path: Path) -> None:
    run = _run(tmp_path)
    report = html_report.write_run_html(run, max_samples=5, per_page=4)
    html = report.read_text(encoding="utf-8")
    # The excerpt stays bounded; the rest is on the pages.
    assert html.count('<details class="sample"') == 5
    assert "model-a: 5 of 30 samples embedded (limit reached; every sample is on the pages below)" in html
    pages = sorted((run / "pages").iterdir())
    assert [p.name for p in pages] == [f"personagym-light-{n:03d}.html" for n in range(1, 7)] + [
        "rolebench-en-001.html", "rolebench-en-002.html"]
    linked = [h for h, _ in HREF.findall(html) if h.startswith("pages/")]
    assert linked == [f"pages/{p.name}" for p in pages]  # each page once, in order
    assert "personagym-light: 23 samples on 6 pages" in html and "rolebench-en: 7 samples on 2 pages" in html

    on_pages = [sid for page in pages for sid in _ids_on(page)]
    expected = [str(r["sample_id"]) for r in iter_samples(run)]
    assert len(expected) == 30 and sorted(on_pages) == sorted(expected) and len(set(on_pages)) == 30
    assert [len(_ids_on(p)) for p in pages] == [4, 4, 4, 4, 4, 3, 4, 3]

    for index, page in enumerate(pages[:6]):  # prev/next chain within a task, index link back
        text = page.read_text(encoding="utf-8")
        links = [h for h, _ in HREF.findall(text)]
        assert "../report.html" in links
        assert (f"personagym-light-{index:03d}.html" in links) == (index > 0)
        assert (f"personagym-light-{index + 2:03d}.html" in links) == (index < 5)
        for href in links:  # relative links only, each to a file that exists
            assert not href.startswith(("/", "http")) and (page.parent / href).is_file(), href
    assert "rolebench-en-002.html" in pages[6].read_text(encoding="utf-8")
    assert 'id="all-samples"' in html
    assert not list(run.rglob("*.tmp"))


def test_pages_show_own_content_escaped_and_scores(tmp_path: Path) -> None:
    run = _run(tmp_path, personas=3, items=3)
    html_report.write_run_html(run, per_page=10)
    page = (run / "pages" / "personagym-light-001.html").read_text(encoding="utf-8")
    assert fx.HOSTILE_ANSWER not in page
    assert "&lt;script&gt;document.title=&quot;pwned&quot;&lt;/script&gt;" in page
    first = json.loads((run / "samples.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert "Question 0: what do you do on a stormy night?" in page  # the last user message of the prompt
    assert f'· score <span class="score">{first["score"]:.3g}</span>' in page
    assert f"judge <b>{fx.JUDGE}</b>: {first['judgments'][0]['score']:.3g}" in page
    # Schema-1 records carry their judge prompt inline: shown once, in a collapsed block.
    assert page.count("<summary>judge prompt</summary>") == 3


def test_pages_do_not_read_the_calls_files(tmp_path: Path) -> None:
    """Schema-2 references stay references on the pages: the calls are named by key, never read
    (here the calls files do not even exist, so resolving would fail)."""
    run = _run(tmp_path, personas=1, items=0)
    judge_prompt = {"$call": "06f5de4d84c02986e364", "file": "judging", "part": "prompt"}
    records = [{
        "schema": 2, "task": "personagym", "sample_id": f"p000-EA-q{i}", "unit": "a nurse", "metric": "EA",
        "question": f"question {i}?", "prompt": {"$call": f"a{i}" * 8, "file": "generation", "part": "prompt"},
        "answer": f"answer {i}", "judge_prompt": judge_prompt,
        "judgments": [{"judge": "gpt", "batch": 0, "batch_position": i, "batch_size": 2, "score": None,
                       "unscored_reason": "no '(N) Evaluation:' segments in the reply",
                       "reply": {"$call": "06f5de4d84c02986e364", "file": "judging", "part": "reply", "sha": "x"}}],
        "score": None, "unscored_reason": "no '(N) Evaluation:' segments in the reply",
    } for i in range(2)]
    (run / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    html_report.write_run_html(run)
    page = (run / "pages" / "personagym-001.html").read_text(encoding="utf-8")
    assert page.count('<span class="score unscored">unscored</span>') == 2
    assert "judge <b>gpt</b>: unscored (no &#x27;(N) Evaluation:&#x27; segments in the reply) · question 2 of 2 of its call" in page
    assert "calls: model a1a1a1a1a1a1 · judge 06f5de4d84c0" in page
    assert '<h3 class="unit">a nurse</h3>' in page and page.count('class="unit"') == 1


def test_a_rederive_with_fewer_pages_removes_the_stale_ones(tmp_path: Path) -> None:
    run = _run(tmp_path, personas=23, items=0)
    html_report.write_run_html(run, per_page=3)
    assert len(list((run / "pages").glob("*.html"))) == 8
    (run / "pages" / "notes.txt").write_text("mine", encoding="utf-8")  # not a page: left alone
    html_report.write_run_html(run, per_page=10)
    assert sorted(p.name for p in (run / "pages").iterdir()) == [
        "notes.txt", "personagym-light-001.html", "personagym-light-002.html", "personagym-light-003.html"]
    assert "personagym-light-004.html" not in (run / "report.html").read_text(encoding="utf-8")
    assert "next page" not in (run / "pages" / "personagym-light-003.html").read_text(encoding="utf-8")
    # No samples at all: no page, and the folder goes when only pages were in it.
    (run / "pages" / "notes.txt").unlink()
    (run / "samples.jsonl").write_text("", encoding="utf-8")
    html_report.write_run_html(run)
    assert not (run / "pages").exists()


def test_a_failed_derive_leaves_every_link_of_the_old_report_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = _run(tmp_path, personas=23, items=0)
    html_report.write_run_html(run, per_page=3)
    before = (run / "report.html").read_text(encoding="utf-8")
    render = html_report._page_renderer
    pages_written = []

    def failing(*args: object) -> object:
        inner = render(*args)  # type: ignore[arg-type]

        def draw(context: dict) -> str:
            if context["number"] == 3:
                raise RuntimeError("killed while writing page 3")
            pages_written.append(context["number"])
            return inner(context)
        return draw

    monkeypatch.setattr(html_report, "_page_renderer", failing)
    with pytest.raises(RuntimeError):
        html_report.write_run_html(run, per_page=5)
    assert pages_written == [1, 2]
    assert (run / "report.html").read_text(encoding="utf-8") == before
    for href, _ in HREF.findall(before):
        if href.startswith("pages/"):
            page = (run / href).read_text(encoding="utf-8")
            assert page.rstrip().endswith("</html>")  # whole: an old page or a new one
    assert not list(run.rglob("*.tmp"))


def test_report_html_stays_bounded_on_a_big_run(tmp_path: Path) -> None:
    sizes, peaks = {}, {}
    for n in (200, 2000):
        run = fx.write_run(tmp_path / f"r{n}", "big", [fx.personagym_task(fx.persona_values(n=n, seed=3))])
        report = html_report.write_run_html(run, max_samples=300)
        pages = list((run / "pages").glob("*.html"))
        sizes[n] = (report.stat().st_size, sum(p.stat().st_size for p in pages), len(pages))
        # Memory while writing the pages: one page of samples at a time, whatever the run's size.
        render = html_report._page_renderer(run, json.loads((run / "results.json").read_text()), html_pages.SAMPLES_PER_PAGE)
        render({"task": "t", "number": 1, "samples": "", "first": "", "last": "", "count": 0, "prev": None, "next": None})
        tracemalloc.start()
        html_pages.write_sample_pages(run, render)
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    (small, small_pages, _), (big, big_pages, count) = sizes[200], sizes[2000]
    # 10x the samples: report.html grows only by its per-unit charts and page links, the pages ~10x.
    assert count == 10 and big_pages > 9 * small_pages
    assert big < 1.5 * small, sizes
    assert big_pages / 2000 < 1500  # bytes per sample on the pages: the sample's own content
    assert peaks[2000] < 1.3 * peaks[200], peaks


def test_distribution_numbers_without_pandas() -> None:
    """Quartiles by linear interpolation (numpy's and pandas' default), computed by hand:
    values 1, 2, 4, 5 -> q1 1.75, median 3, q3 4.25, mean 3; None and NaN are unscored, left out."""
    per_unit = {"u1": {"EA": 1.0}, "u2": {"EA": 2}, "u3": {"EA": 4.0}, "u4": {"EA": 5.0}, "u5": {"EA": None},
                "u6": {"EA": float("nan")}, "u7": {"TC": 3.0}}
    chart = distribution_chart("t", "likert", [("EA", "EA")], [Series("m", PALETTE[0])], [per_unit])
    box = chart.groups[0]["boxes"][0]

    def y(value: float) -> float:  # likert axis: 1 at the bottom (230), 5 at the top (28)
        return 230 - (value - 1) / 4 * (230 - 28)

    assert box["n"] == 4
    assert (box["q1"], box["med"], box["q3"], box["mean"]) == pytest.approx((y(1.75), y(3.0), y(4.25), y(3.0)))
    assert (box["lo"], box["hi"]) == pytest.approx((y(1.0), y(5.0)))
    assert box["title"] == "m EA: n=4, median 3, IQR 1.75-4.25, mean 3"
    assert [d["title"] for d in box["dots"]] == ["m EA 1: u1", "m EA 2: u2", "m EA 4: u3", "m EA 5: u4"]
    # A continuous metric's axis tops at the largest value rounded up to a quarter.
    cont = distribution_chart("t", "continuous", [("CUS", "CUS")], [Series("m", PALETTE[0])],
                              [{"a": {"CUS": 0.2}, "b": {"CUS": 1.3}, "c": {"CUS": 0.7}}])
    assert [t["label"] for t in cont.y_ticks] == ["0.00", "0.38", "0.75", "1.12", "1.50"]
    assert cont.groups[0]["boxes"][0]["title"] == "m CUS: n=3, median 0.7, IQR 0.45-1, mean 0.733"


def test_the_html_path_does_not_import_pandas() -> None:
    code = ("import sys; import rolebench_eval.analysis.html_report, rolebench_eval.running.run_outputs; "
            "print('pandas' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs headless Chromium at /usr/bin/chromium")
def test_a_sample_page_renders_in_chromium(tmp_path: Path) -> None:
    run = _run(tmp_path, personas=6, items=0)
    html_report.write_run_html(run, per_page=4)
    page = run / "pages" / "personagym-light-002.html"
    result = subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--user-data-dir={tmp_path / 'p'}",
         "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'data-js="rbe-report-ready"' in result.stdout
    assert result.stdout.count('<details class="sample"') == 2
    assert "<title>pwned</title>" not in result.stdout


def test_pages_of_real_runs_with_references(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner writes the pages with the derived files: PersonaGym (batched, two judges),
    PersonaGym-Light and RoleBench records of schema 2, every sample once, own content only."""
    import sample_refs_fixture as fixture

    fixture.install(monkeypatch.setattr)
    runs = fixture.scripted_run(tmp_path / "results")
    for run in runs:
        records = list(iter_samples(run))
        pages = sorted((run / "pages").glob("*.html"))
        assert sorted(sid for page in pages for sid in _ids_on(page)) == sorted(str(r["sample_id"]) for r in records)
        report = (run / "report.html").read_text(encoding="utf-8")
        assert [h for h, _ in HREF.findall(report) if h.startswith("pages/")] == [f"pages/{p.name}" for p in pages]
        text = "".join(p.read_text(encoding="utf-8") for p in pages)
        for record in records:
            assert html_pages.escape(str(record.get("answer") or "")) in text
            for j in record.get("judgments") or []:
                assert f"judge <b>{html_pages.escape(str(j['judge']))}</b>: " in text
        # Shared texts of calls are named by key, not copied: no judge prompt, no examples reply.
        for record in records:
            if isinstance(record.get("judge_prompt"), list):
                assert record["judge_prompt"][0]["content"][:200] not in text
            examples = record.get("score_examples")
            if isinstance(examples, dict) and examples.get("reply"):
                assert html_pages.escape(examples["reply"][:200]) not in text
        assert "calls: model " in text
    rolebench = next(r for r in runs if any(str(x.get("task", "")).startswith("rolebench") for x in iter_samples(r)))
    first = next(iter_samples(rolebench))
    # RoleBench has no single score: each ROUGE-L reference set's score, then each judge's verdict.
    parts = [f"{m} {'unscored' if v is None else (f'{v:.3g}' if isinstance(v, float) else v)}" for m, v in first["scores"].items()]
    parts += [f"{label}: {v['outcome']}" for label, v in first["verdicts"].items()]
    assert html_pages.score_text(first) == " · ".join(parts) and len(parts) >= 2
    assert f'score <span class="score">{html_pages.escape(html_pages.score_text(first))}</span>' in (
        "".join(p.read_text(encoding="utf-8") for p in (rolebench / "pages").glob("*.html")))


def test_a_dialogue_is_shown_as_its_turns(tmp_path: Path) -> None:
    run = _run(tmp_path, personas=1, items=0)
    record = {"schema": 1, "task": "rpbench-character", "sample_id": "character-00", "unit": "character-00", "score": 1.0,
              "unscored_reason": None, "turns": [
                  {"speaker": "npc", "role": "model", "text": "<b>hello</b>", "round": 0},
                  {"speaker": "judge-4t", "role": "user", "text": "line 2", "round": 1}]}
    (run / "samples.jsonl").write_text(json.dumps(record) + "\n", encoding="utf-8")
    html_report.write_run_html(run)
    page = (run / "pages" / "rpbench-character-001.html").read_text(encoding="utf-8")
    assert '<div class="bubble npc"><div class="role">round 0 · npc</div><pre>&lt;b&gt;hello&lt;/b&gt;</pre></div>' in page
    assert '<div class="bubble user"><div class="role">round 1 · judge-4t</div><pre>line 2</pre></div>' in page
    assert "<h4>Answer</h4>" not in page
