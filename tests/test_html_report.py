"""HTML reports: rendered from synthetic runs, then opened in headless Chromium (marker `browser`)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import run_fixtures as fx  # noqa: E402

from rolebench_eval.analysis import html_report  # noqa: E402
from rolebench_eval.cli import main  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
def results_root(tmp_path: Path) -> Path:
    root = tmp_path / "results"
    base = fx.persona_values(n=30, seed=1)
    fx.write_run(root, "model-a__personagym-light__aaaa", [fx.personagym_task(base)], model="model-a")
    fx.write_run(root, "model-b__personagym-light__bbbb", [fx.personagym_task(fx.persona_values(base=base, shift=0.3, seed=2))], model="model-b")
    fx.write_run(root, "model-c__rolebench__cccc", [fx.rolebench_task(fx.rolebench_values(n=30))], model="model-c")
    return root


def test_run_page_has_charts_tables_and_escaped_samples(results_root: Path) -> None:
    run = results_root / "runs" / "model-a__personagym-light__aaaa"
    page = html_report.write_run_html(run)
    assert page == run / "report.html"
    html = page.read_text(encoding="utf-8")
    assert html.count('<svg class="rbe-chart"') == 3  # radar, bars with CI, per-persona distribution
    assert html.count('class="errorbar"') == 6
    assert html.count('<circle class="unit"') == 6 * 30  # every persona on every metric
    assert "PScore-L" in html and "Expected Action" in html
    assert html.count('<details class="sample"') == 30
    # Untrusted model text is escaped, never live markup.
    assert fx.HOSTILE_ANSWER not in html
    assert "&lt;script&gt;document.title=&#34;pwned&#34;&lt;/script&gt;&lt;img src=x onerror=" in html
    # Self-contained: no URL to fetch anything from.
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)


def test_sample_limit_keeps_the_page_bounded_and_says_so(results_root: Path) -> None:
    run = results_root / "runs" / "model-a__personagym-light__aaaa"
    html = html_report.render_run_html(run, max_samples=5)
    assert html.count('<details class="sample"') == 5
    assert "model-a: 5 of 30 samples embedded (limit reached; 25 left out: see above)" in html


def test_site_page_groups_runs_and_links_run_pages(results_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = results_root / "site.html"
    assert main(["report", "--results-dir", str(results_root), "--output", str(output)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {output}"
    html = output.read_text(encoding="utf-8")
    assert '<h2 class="benchmark">PersonaGym</h2>' in html and '<h2 class="benchmark">RoleBench</h2>' in html
    assert html.count('<table class="data leaderboard">') == 2
    assert 'href="runs/model-a__personagym-light__aaaa/report.html"' in html
    # PersonaGym: radar + bars + distribution; RoleBench: ROUGE bars + distribution, win-rate bars.
    assert html.count('<svg class="rbe-chart"') == 6
    assert html.count('<polygon class="series"') == 2  # one radar polygon per model
    assert '<select id="sample-run"' in html
    for run in ("model-a__personagym-light__aaaa", "model-c__rolebench__cccc"):
        assert (results_root / "runs" / run / "report.html").is_file()


def test_empty_results_folder(tmp_path: Path) -> None:
    html = html_report.render_site_html(tmp_path, tmp_path / "report.html")
    assert "No finished run yet" in html


def _chromium(page: Path, profile: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
         "--enable-logging=stderr", "--v=0", *flags, page.as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs headless Chromium at /usr/bin/chromium (apt-get install -y chromium)")
@pytest.mark.parametrize("which", ["site", "run"])
def test_page_renders_in_chromium_without_script_errors(results_root: Path, tmp_path: Path, which: str) -> None:
    if which == "site":
        page = html_report.write_site_html(results_root, results_root / "report.html")
        charts = 6
    else:
        page = html_report.write_run_html(results_root / "runs" / "model-b__personagym-light__bbbb")
        charts = 3
    result = _chromium(page, tmp_path / "profile", "--dump-dom")
    dom = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    # The script's last statements write the marker: absent if any statement before them threw.
    assert 'data-js="rbe-report-ready"' in dom
    assert '<span id="js-status">rbe-report-ready</span>' in dom
    assert "Uncaught" not in result.stderr
    assert dom.count('class="rbe-chart"') == charts
    assert "<table" in dom and "</table>" in dom
    # The hostile answer stayed text: its script did not run, its markup is not in the DOM.
    assert "<title>pwned</title>" not in dom and '<img src="x"' not in dom
    assert "&lt;script&gt;document.title=" in dom

    screenshot = tmp_path / "page.png"
    shot = _chromium(page, tmp_path / "profile2", "--window-size=1280,2000", f"--screenshot={screenshot}")
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert screenshot.stat().st_size > 20_000  # a blank page is a few kB



def test_unscored_run_says_there_is_nothing_to_chart(tmp_path: Path) -> None:
    unscored = {f"persona {i}": {m: None for m in (*fx.PERSONAGYM_METRICS, "PersonaScore")} for i in range(3)}
    run = fx.write_run(tmp_path / "results", "unscored", [fx.personagym_task(unscored)])
    html = html_report.render_run_html(run)
    assert '<svg class="rbe-chart"' not in html
    assert "no metric has a scored unit yet" in html


def test_run_page_shows_the_calls_section_and_why_the_run_is_incomplete(results_root: Path) -> None:
    import json

    run = results_root / "runs" / "model-a__personagym-light__aaaa"
    results = json.loads((run / "results.json").read_text(encoding="utf-8"))
    results["calls"] = {"content_attempts": 3, "total": {"made": 7, "reused": 2, "failed": 1, "empty_answers": 1, "retried_attempts": 4},
                        "by_role": [{"role": "judge:gpt", "model": "gpt", "stage": "rubric_grading", "made": 7, "reused": 2,
                                     "failed": 1, "empty_answers": 0, "retried_attempts": 4,
                                     "failure_reasons": {"HTTP 503 (gave up after 3 attempt(s))": 1},
                                     "attempt_errors": {"HTTP 429 rate limited": 4}}]}
    results["incomplete"] = ["1 rubric_grading call(s) of judge:gpt (gpt) failed after their retries"]
    (run / "results.json").write_text(json.dumps(results), encoding="utf-8")
    html = html_report.render_run_html(run)
    assert "7 made, 2 reused, 1 failed, 4 retried attempt(s), 1 empty answer(s)" in html
    assert "retried 4× HTTP 429 rate limited" in html and "failed 1× HTTP 503 (gave up after 3 attempt(s))" in html
    assert "incomplete: 1 rubric_grading call(s) of judge:gpt (gpt) failed" in html
