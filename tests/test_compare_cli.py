"""`rbe compare` end to end on synthetic runs, against statistics computed here with scipy."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).parent))
import run_fixtures as fx  # noqa: E402

from rolebench_eval.cli import main  # noqa: E402

RESAMPLES = 999  # fewer than the default: the same code path, a faster test


@pytest.fixture
def runs(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "results"
    base = fx.persona_values(n=30, seed=1)
    better = fx.persona_values(base=base, shift=0.4, seed=2)
    # Pairing: candidate lacks one persona, and one of its personas is unscored on EA.
    del better[next(iter(better))]
    better[list(better)[3]]["EA"] = None
    return {
        "a": fx.write_run(root, "model-a__personagym-light__aaaa", [fx.personagym_task(base)], model="model-a"),
        "b": fx.write_run(root, "model-b__personagym-light__bbbb", [fx.personagym_task(better)], model="model-b"),
        "same": fx.write_run(root, "model-c__personagym-light__cccc", [fx.personagym_task(dict(base))], model="model-c"),
        "root": root,
    }


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _series(path: Path, task: str, metric: str) -> pd.Series:
    per_unit = json.loads((path / "results.json").read_text())["tasks"][task]["per_unit"]
    return pd.Series({unit: row.get(metric) for unit, row in per_unit.items()}, dtype=float).dropna()


def _holm(p: np.ndarray) -> np.ndarray:
    # Written out here, independently of paired_stats.holm_adjust.
    m = len(p)
    order = np.argsort(p)
    adjusted = np.empty(m)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted


def test_json_statistics_match_scipy(runs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "compare", str(runs["a"]), str(runs["b"]), "--format", "json", "--resamples", str(RESAMPLES))
    assert code == 0
    document = json.loads(out)
    [pair] = document["comparisons"]
    assert pair["comparable"] is True and pair["mismatches"] == []
    comparison = pair["comparison"]
    assert comparison["correction"] == "holm" and comparison["label_a"] == "model-a" and comparison["label_b"] == "model-b"
    metrics = {m["metric"]: m for m in comparison["metrics"]}
    assert list(metrics) == [f"personagym-light/{m}" for m in (*fx.PERSONAGYM_METRICS, "PersonaScore")]

    raw_p = []
    for name, got in metrics.items():
        metric = name.split("/")[1]
        a, b = _series(runs["a"], "personagym-light", metric), _series(runs["b"], "personagym-light", metric)
        common = a.index.intersection(b.index)
        diff = (b[common] - a[common]).to_numpy()
        assert got["n_paired"] == len(common) == (28 if metric == "EA" else 29)
        assert got["n_only_a"] == len(a.index.difference(b.index))
        assert got["mean_a"] == pytest.approx(a[common].mean())
        assert got["mean_b"] == pytest.approx(b[common].mean())
        assert got["diff"] == pytest.approx(diff.mean())
        expected = stats.wilcoxon(diff, zero_method="pratt")
        assert got["kind"] == "likert" and got["test"].startswith("wilcoxon")
        assert got["p_value"] == pytest.approx(expected.pvalue)
        ci = stats.bootstrap((diff,), np.mean, n_resamples=RESAMPLES, method="BCa", confidence_level=0.95,
                             rng=np.random.default_rng(0)).confidence_interval
        assert got["ci95"] == pytest.approx([ci.low, ci.high])
        raw_p.append(expected.pvalue)
    for got, adjusted in zip(metrics.values(), _holm(np.array(raw_p))):
        assert got["p_adjusted"] == pytest.approx(adjusted)
        assert got["significant"] == (adjusted <= 0.05)
    # A +0.4 shift on 29 personas is detected on every metric.
    assert all(m["significant"] and m["diff"] > 0 for m in metrics.values())


def test_bh_correction_is_named_and_applied(runs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "compare", str(runs["a"]), str(runs["b"]), "--format", "json",
                        "--correction", "bh", "--resamples", str(RESAMPLES))
    assert code == 0
    comparison = json.loads(out)["comparisons"][0]["comparison"]
    assert comparison["correction"] == "bh"
    p = np.array([m["p_value"] for m in comparison["metrics"]])
    assert [m["p_adjusted"] for m in comparison["metrics"]] == pytest.approx(stats.false_discovery_control(p, method="bh"))
    code, out, _ = _run(capsys, "compare", str(runs["a"]), str(runs["b"]), "--correction", "bh", "--resamples", "99")
    assert "p_adj (bh)" in out and "after bh correction" in out


def test_rolebench_kinds_use_t_test_and_sign_test(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "results"
    base = fx.rolebench_values(n=45, seed=3)
    other = fx.rolebench_values(n=45, seed=4, base=base, shift=0.05)
    a = fx.write_run(root, "a", [fx.rolebench_task(base)], model="model-a")
    b = fx.write_run(root, "b", [fx.rolebench_task(other)], model="model-b")
    code, out, _ = _run(capsys, "compare", "a", "b", "--results-dir", str(root), "--format", "json", "--resamples", str(RESAMPLES))
    assert code == 0
    metrics = {m["metric"]: m for m in json.loads(out)["comparisons"][0]["comparison"]["metrics"]}
    for metric in ("CUS", "RAW", "SPE"):
        sa, sb = _series(a, "rolebench-en", metric), _series(b, "rolebench-en", metric)
        expected = stats.ttest_rel(sb, sa[sb.index])
        got = metrics[f"rolebench-en/{metric}"]
        assert got["test"] == "ttest_rel" and got["n_paired"] == 15
        assert got["p_value"] == pytest.approx(expected.pvalue)
        assert got["statistic"] == pytest.approx(expected.statistic)
    for metric in ("win_rate", "win_rate_tie_adjusted"):
        va = pd.Series({u: r[metric] for u, r in base.items()})
        vb = pd.Series({u: r[metric] for u, r in other.items()})
        diff = vb - va
        expected = stats.binomtest(int((diff > 0).sum()), int((diff != 0).sum()), 0.5)
        got = metrics[f"rolebench-en/{metric}"]
        assert got["kind"] == "verdict" and got["test"].startswith("sign test")
        assert got["p_value"] == pytest.approx(expected.pvalue)
        assert got["mean_a"] == pytest.approx(va.mean()) and got["mean_b"] == pytest.approx(vb.mean())


def test_refuses_incompatible_runs_and_names_the_differences(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "results"
    base = fx.persona_values(n=20)
    a = fx.write_run(root, "a", [fx.personagym_task(base)])
    b = fx.write_run(root, "b", [fx.personagym_task(base, judges=("gpt-4o-2024-05-13",), data_hash="z" * 64,
                                                     protocol="personagym", version="2")], model="model-b")
    code, out, err = _run(capsys, "compare", str(a), str(b))
    assert code == 2 and out == ""
    assert "not comparable" in err
    for what in ("protocol differs", "judge set differs", "task version differs", "data hash data.questions_sha256 differs",
                 "gpt-4o-2024-05-13", "--allow-mismatch"):
        assert what in err

    code, out, _ = _run(capsys, "compare", str(a), str(b), "--allow-mismatch", "--resamples", "99")
    assert code == 0
    assert "WARNING: compared with --allow-mismatch" in out and "judge set differs" in out
    code, out, _ = _run(capsys, "compare", str(a), str(b), "--allow-mismatch", "--format", "json", "--resamples", "99")
    pair = json.loads(out)["comparisons"][0]
    assert pair["comparable"] is False and pair["allow_mismatch_used"] is True
    assert any("data hash" in m for m in pair["mismatches"])


def test_markdown_and_text_output(runs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "compare", str(runs["a"]), str(runs["b"]), "--format", "markdown", "--resamples", "99")
    assert code == 0
    assert out.startswith("### model-b vs model-a")
    assert "| metric | kind | n | a: model-a | b: model-b | diff | 95% CI | test | p | p_adj (holm) | sig |" in out
    assert "| personagym-light/PersonaScore | likert | 29 (+1/+0) |" in out
    code, out, _ = _run(capsys, "compare", str(runs["a"]), str(runs["b"]), "--resamples", "99")
    assert code == 0 and "personagym-light/EA" in out and "correction: holm across 6 metrics" in out
    assert "|" not in out.splitlines()[6]  # the terminal table is aligned text, not markdown


def test_several_runs_each_against_the_first(runs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "compare", "model-a__personagym-light__aaaa", "model-b__personagym-light__bbbb",
                        "model-c", "--results-dir", str(runs["root"]), "--format", "json", "--resamples", "99")
    assert code == 0
    pairs = json.loads(out)["comparisons"]
    assert [(p["a"]["label"], p["b"]["label"]) for p in pairs] == [("model-a", "model-b"), ("model-a", "model-c")]
    identical = pairs[1]["comparison"]["metrics"]
    assert all(m["diff"] == 0 and m["p_value"] == 1.0 and not m["significant"] for m in identical)


def test_fail_if_worse_on_compare(runs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    # b is better than a; compared the other way round it is a significant drop of ~0.4.
    code, out, _ = _run(capsys, "compare", str(runs["b"]), str(runs["a"]), "--fail-if-worse", "PersonaScore:0.1", "--resamples", "99")
    assert code == 1
    assert "FAIL personagym-light/PersonaScore (allowed drop 0.1)" in out
    code, _, _ = _run(capsys, "compare", str(runs["a"]), str(runs["b"]), "--fail-if-worse", "PersonaScore:0.1", "--resamples", "99")
    assert code == 0


def test_bad_input_exits_2(runs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "compare", str(runs["a"]))
    assert code == 2 and "at least two runs" in err
    code, _, err = _run(capsys, "compare", str(runs["a"]), "no-such-run", "--results-dir", str(runs["root"]))
    assert code == 2 and "no run directory, baseline file or run id 'no-such-run'" in err
    code, _, err = _run(capsys, "compare", str(runs["a"]), str(runs["b"]), "--metrics", "Persona")
    assert code == 2 and "unknown metric 'Persona'" in err


def test_cli_defaults_match_the_statistics_module() -> None:
    # cli_analysis repeats these to avoid importing pandas/scipy when building the parser.
    from rolebench_eval import cli_analysis
    from rolebench_eval.analysis import multiple_comparisons, paired_stats

    assert cli_analysis.CORRECTIONS == multiple_comparisons.CORRECTIONS
    assert cli_analysis.DEFAULT_SEED == paired_stats.DEFAULT_SEED
    assert cli_analysis.DEFAULT_RESAMPLES == paired_stats.DEFAULT_RESAMPLES
