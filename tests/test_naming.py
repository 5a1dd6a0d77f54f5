"""One naming scheme (rolebench_eval.naming): kebab-case names, any case and separator, old names and
short codes as aliases, ambiguity and unknown names refused with the candidates (exit 2)."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import run_fixtures as fx  # noqa: E402

from rolebench_eval import naming  # noqa: E402
from rolebench_eval.analysis import paper_tables as pt  # noqa: E402
from rolebench_eval.analysis.compare_runs import metric_catalogue, resolve_metric  # noqa: E402
from rolebench_eval.analysis.loaded_runs import load_run  # noqa: E402
from rolebench_eval.cli import main  # noqa: E402
from rolebench_eval.errors import UsageError  # noqa: E402
from rolebench_eval.running.runner import RunConfig, Runner  # noqa: E402
from rolebench_eval.task_registry import canonical_setting, discover  # noqa: E402

OLD_TABLES = ["opencharacter_table3", "opencharacter_table5", "personagym_table1",
              "rolellm_en_instruction", "rolellm_en_role", "rolellm_zh_instruction"]
FAST = ["--resamples", "199"]


def test_normalise_ignores_case_and_separators() -> None:
    assert naming.normalise(" OpenCharacter_Table3 ") == naming.normalise("opencharacter table3") == "opencharacter-table3"
    assert naming.normalise("PScore-L") != naming.normalise("PScore")
    assert naming.kebab("rolellm_en_instruction") == "rolellm-en-instruction"


# --------------------------------------------------------------------------------------------------
# Tables


@pytest.mark.parametrize("old", OLD_TABLES)
def test_every_table_loads_by_its_kebab_name_and_its_old_name(old: str) -> None:
    new = old.replace("_", "-")
    assert new in pt.list_tables()
    for spelling in (new, old, new.upper(), old.replace("_", " ")):
        table = pt.load_table(spelling)
        assert table.name == new
    assert pt.load_table(old).rows == pt.load_table(new).rows


def test_unknown_table_is_one_line_naming_the_tables(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["table", "opencharacter-table9"])
    err = capsys.readouterr().err
    assert code == 2
    line = err.strip().splitlines()[-1]
    assert "unknown paper table 'opencharacter-table9'" in line and "opencharacter-table3" in line and "personagym-table1" in line


# --------------------------------------------------------------------------------------------------
# Metrics: every alias, on a catalogue of both PersonaGym tasks and RoleBench


@pytest.fixture
def two_personagym_runs(tmp_path: Path) -> Path:
    results = tmp_path / "results"
    base = fx.persona_values(n=12)
    full = fx.personagym_task(base, name="personagym")
    full = dataclasses.replace(full, metric_names={**full.metric_names, "PersonaScore": "PScore"})  # as the task names it
    tasks = [fx.personagym_task(base), full, fx.rolebench_task(fx.rolebench_values(n=12))]
    fx.write_run(results, "a", tasks)
    fx.write_run(results, "b", tasks, model="model-b")
    return results


def _catalogue(results: Path):
    run = load_run("a", results)
    return metric_catalogue(run.tasks, list(run.tasks))


def test_every_metric_alias_resolves_in_any_case(two_personagym_runs: Path) -> None:
    catalogue = _catalogue(two_personagym_runs)
    for key, aliases in naming.METRIC_ALIASES.items():
        for task in ("personagym-light", "personagym", "rolebench-en"):
            qualified = f"{task}/{key}"
            if qualified not in catalogue:
                continue
            for alias in (key, *aliases):
                for spelling in (alias, alias.upper(), alias.lower()):
                    assert resolve_metric(f"{task}/{spelling}", catalogue) == qualified, (task, spelling)


def test_plain_names_resolve_when_one_task_has_them(two_personagym_runs: Path) -> None:
    catalogue = _catalogue(two_personagym_runs)
    # The name each table shows picks its task: PScore-L is Light's, PScore the full benchmark's.
    assert resolve_metric("PScore-L", catalogue) == "personagym-light/PersonaScore"
    assert resolve_metric("pscore", catalogue) == "personagym/PersonaScore"
    assert resolve_metric("RAW", catalogue) == "rolebench-en/RAW"
    assert resolve_metric("rouge-l cus", catalogue) == "rolebench-en/CUS"
    assert resolve_metric("personagym-light/Expected Action", catalogue) == "personagym-light/EA"
    assert resolve_metric("PersonaGym_Light/toxicity", catalogue) == "personagym-light/TC"


@pytest.mark.parametrize("name", ["PersonaScore", "Expected Action", "ea", "TC"])
def test_a_name_two_tasks_have_is_ambiguous_naming_both(two_personagym_runs: Path, name: str) -> None:
    with pytest.raises(UsageError) as error:
        resolve_metric(name, _catalogue(two_personagym_runs))
    message = str(error.value)
    assert "ambiguous" in message and "personagym-light/" in message and "personagym/" in message
    assert "\n" not in message


def test_win_rate_aliases_with_one_and_with_several_judges() -> None:
    one = [naming.MetricEntry("rolebench-en/win_rate", "rolebench-en", "win_rate", "win rate"),
           naming.MetricEntry("rolebench-en/win_rate_tie_adjusted", "rolebench-en", "win_rate_tie_adjusted", "win rate, ties ½")]
    assert naming.resolve_metric("Win Rate", one) == "rolebench-en/win_rate"
    assert naming.resolve_metric("winrate", one) == "rolebench-en/win_rate"
    assert naming.resolve_metric("win rate, ties 1/2", one) == "rolebench-en/win_rate_tie_adjusted"
    several = [naming.MetricEntry(f"rolebench-en/win_rate[{j}]", "rolebench-en", f"win_rate[{j}]", f"win rate [{j}]")
               for j in ("gpt", "claude")]
    assert naming.resolve_metric("WinRate[gpt]", several) == "rolebench-en/win_rate[gpt]"
    assert naming.resolve_metric("win rate [claude]", several) == "rolebench-en/win_rate[claude]"
    with pytest.raises(UsageError, match=r"'win rate' is ambiguous: rolebench-en/win_rate\[gpt\].*win_rate\[claude\]"):
        naming.resolve_metric("win rate", several)


def test_unknown_metric_lists_the_known_ones(two_personagym_runs: Path) -> None:
    with pytest.raises(UsageError, match=r"unknown metric 'Persona'.*Known metrics: personagym-light/EA \(Expected Action\)"):
        resolve_metric("Persona", _catalogue(two_personagym_runs))


def test_compare_accepts_shown_names_and_rejects_ambiguous_ones(two_personagym_runs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["compare", "a", "b", "--results-dir", str(two_personagym_runs), *FAST,
                 "--metrics", "PScore-L,personagym/Persona Consistency", "--format", "json"])
    out, _ = capsys.readouterr()
    assert code == 0
    compared = [m["metric"] for m in json.loads(out)["comparisons"][0]["comparison"]["metrics"]]
    assert compared == ["personagym-light/PersonaScore", "personagym/PC"]
    code = main(["compare", "a", "b", "--results-dir", str(two_personagym_runs), *FAST, "--metrics", "Linguistic Habits"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "personagym-light/LH (Linguistic Habits)" in err and "personagym/LH (Linguistic Habits)" in err


# --------------------------------------------------------------------------------------------------
# `rbe regress --fail-if-worse PScore-L:0.1` on real runs of PersonaGym-Light (scripted models)

JUDGE = "openai:judge-a,base_url=http://127.0.0.1:9/v1"


def _answer(label: str):
    return lambda request: f"{label} says: " + request.messages[-1].content[:20]


def _judge(request) -> str:
    content = request.messages[-1].content
    if request.messages[0].role == "user" or ("Score 1:" in content and "Evaluation" not in content):
        return "\n".join(f'Score {k}: Response - "example {k}"' for k in range(1, 6))
    # The candidate's answers are judged one point lower on every task: a clear, consistent drop.
    return f"(1) Evaluation: ok. Therefore, the final score is {3 if 'worse says:' in content else 4}"


def _real_run(tmp_path: Path, model: str) -> str:
    config = RunConfig(tasks=["personagym-light"], model=model, backend="openai", base_url="http://127.0.0.1:9/v1",
                       judges=[JUDGE], limit=8, results_dir=tmp_path / "results", progress=False, max_tokens=16)
    return Runner(config, log=lambda m: None).run().run_dir.name


def test_regress_fail_if_worse_pscore_l_on_real_personagym_light_runs(
    tmp_path: Path, scripted_backends, capsys: pytest.CaptureFixture[str]
) -> None:
    scripted_backends({"better": _answer("better"), "worse": _answer("worse"), "judge-a": _judge})
    baseline, candidate = _real_run(tmp_path, "better"), _real_run(tmp_path, "worse")
    shown = json.loads((tmp_path / "results" / "runs" / baseline / "results.json").read_text())
    assert shown["tasks"]["personagym-light"]["metric_names"]["PersonaScore"] == "PScore-L"
    argv = ["regress", "--results-dir", str(tmp_path / "results"), *FAST, "--baseline", baseline, "--run", candidate]
    code = main([*argv, "--fail-if-worse", "PScore-L:0.1"])
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL personagym-light/PersonaScore (allowed drop 0.1): dropped 1 > allowed 0.1, significant" in out
    code = main([*argv, "--fail-if-worse", "pscore-l:1.5,Expected Action:1.5"])
    out = capsys.readouterr().out
    assert code == 0 and "ok   personagym-light/EA (allowed drop 1.5)" in out
    code = main([*argv, "--fail-if-worse", "PScore-X:0.1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "unknown metric 'PScore-X'" in err and "personagym-light/PersonaScore (PScore-L)" in err


# --------------------------------------------------------------------------------------------------
# Tasks, protocols, templates


def test_tasks_and_groups_in_any_case_and_declared_aliases(tmp_path: Path) -> None:
    registry = discover()
    assert [s.name for s in registry.resolve(["PersonaGym_Light"])] == ["personagym-light"]
    assert [s.name for s in registry.resolve(["PERSONAGYM ALL"])] == ["personagym-light", "personagym"]
    plugin = tmp_path / "plugin"
    plugin.mkdir()
    (plugin / "tasks.toml").write_text(
        '[[task]]\nname = "exact-match"\nfactory = "task:make"\naliases = ["em", "exact_match_v0"]\n', encoding="utf-8"
    )
    registry = discover([str(plugin)])
    assert registry.aliases() == {"exact-match": ["em", "exact_match_v0"]}
    assert [s.name for s in registry.resolve(["EM"])] == ["exact-match"]
    assert [s.name for s in registry.resolve(["exact-match-v0"])] == ["exact-match"]
    with pytest.raises(UsageError, match="unknown task 'personagym-lite'.*Did you mean 'personagym-light'"):
        registry.resolve(["personagym-lite"])


def test_protocol_and_template_names_take_the_tasks_spelling() -> None:
    specs = discover().resolve(["personagym-light", "rolebench-en"])
    assert canonical_setting(specs, "protocols", "OpenCharacter_Full") == "opencharacter-full"
    assert canonical_setting(specs, "roleplay_templates", "RoleLLM_EN") == "rolellm-en"
    assert canonical_setting(specs, "protocols", "nonesuch") == "nonesuch"  # the task refuses it, listing its own
    assert canonical_setting(specs, "protocols", None) is None


def test_a_run_records_the_canonical_protocol(tmp_path: Path, scripted_backends) -> None:
    scripted_backends({"embedded": _answer("m"), "judge-a": _judge})
    config = RunConfig(tasks=["PersonaGym-Light"], judges=[JUDGE], limit=1, results_dir=tmp_path / "results",
                       progress=False, max_tokens=16, protocol="OpenCharacter")
    result = Runner(config, log=lambda m: None).run()
    assert result.results["tasks"]["personagym-light"]["protocol"] == "opencharacter"
    same = RunConfig(tasks=["personagym-light"], judges=[JUDGE], limit=1, results_dir=tmp_path / "results",
                     progress=False, max_tokens=16, protocol="opencharacter")
    again = Runner(same, log=lambda m: None).run()
    assert again.run_dir == result.run_dir and again.calls_made == {"generation": 0, "judging": 0}


def test_ls_lists_every_alias(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    for old in OLD_TABLES:
        assert f"table {old.replace('_', '-')}: also {old}" in out
    for key, aliases in naming.METRIC_ALIASES.items():
        assert f"metric {key}: also {' | '.join(aliases)}" in out


def test_leaderboard_filters_take_the_same_names(two_personagym_runs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["leaderboard", "--results-dir", str(two_personagym_runs)]
    assert main([*argv, "--metrics", "PScore-L,LH"]) == 0
    out = capsys.readouterr().out
    assert "## rolebench-en" not in out
    full, light = out.split("## personagym-light")  # sorted by task name
    assert "## personagym\n" in full
    # LH is in both PersonaGym tasks; PScore-L is the name only Light's score is shown under.
    assert next(line for line in light.splitlines() if line.startswith("| model")).split(" | ")[2:4] == ["Linguistic Habits", "PScore-L"]
    assert next(line for line in full.splitlines() if line.startswith("| model")).split(" | ")[2:4] == ["Linguistic Habits", "units"]
    assert not (two_personagym_runs.parent / "leaderboard.md").exists()  # printed, not written
    assert main([*argv, "--tasks", "RoleBench_EN", "--metrics", "raw"]) == 0
    out = capsys.readouterr().out
    assert "## rolebench-en" in out and "## personagym" not in out and "| RAW |" in out and "CUS" not in out
    assert main([*argv, "--metrics", "PScore-Z"]) == 2
    err = capsys.readouterr().err
    assert "--metrics: no task of the runs has 'PScore-Z'" in err and "PScore-L" in err
    assert main([*argv, "--tasks", "personagym-lite"]) == 2
    assert "Did you mean 'personagym-light'" in capsys.readouterr().err


def test_python_compare_takes_the_same_names(two_personagym_runs: Path) -> None:
    from rolebench_eval import api

    frame = api.compare("a", "b", metrics=["pscore-l", "personagym/Toxicity"], results_dir=two_personagym_runs, resamples=199)
    assert list(frame["metric"]) == ["personagym-light/PersonaScore", "personagym/TC"]
    with pytest.raises(UsageError, match="'PersonaScore' is ambiguous"):
        api.compare("a", "b", metrics=["PersonaScore"], results_dir=two_personagym_runs, resamples=199)
