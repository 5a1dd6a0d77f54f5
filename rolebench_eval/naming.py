"""One naming scheme: how every command turns a name a user typed into the thing it names.

Names are kebab-case (`personagym-light`, `opencharacter-table3`, `opencharacter-full`,
`rolellm-en`). Every lookup is case-insensitive and treats `-`, `_` and spaces alike
(`normalise`), so `OpenCharacter_Table3`, `opencharacter table3` and `opencharacter-table3` are one
name; the snake_case names tables had before are thereby still accepted, and `ALIASES` lists them
for `rbe ls`.

Metrics are stored in results.json under their keys (`EA`, `PersonaScore`, `win_rate`...), which
never change, so that old runs keep loading. A user may name a metric by its key, by the name the
tables show (results' `metric_names`: `Expected Action`, `PScore-L`), or by a short code or
paper name (`METRIC_ALIASES`: `PScore`, `PersonaScore`, `Toxicity`), each optionally qualified
as `TASK/NAME`. `resolve_metric` tries those in tiers (qualified exact, then plain key or shown
name, then aliases) so that, in a run with both PersonaGym tasks, `PScore-L` is the Light task's
score while `PersonaScore` matches both and is refused as ambiguous, naming the candidates.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from rolebench_eval.errors import UsageError, did_you_mean, unknown

_SEPARATORS = re.compile(r"[\s_\-]+")


def normalise(name: str) -> str:
    """The form names are compared in: case-folded, runs of '-', '_' and spaces as one '-'."""
    return _SEPARATORS.sub("-", name.strip()).strip("-").casefold()


def kebab(name: str) -> str:
    """A snake_case or spaced name in kebab-case, keeping its letters' case (`opencharacter_table3`
    -> `opencharacter-table3`)."""
    return _SEPARATORS.sub("-", name.strip()).strip("-")


def candidates(text: str, tiers: Sequence[Mapping[str, Iterable[str]]]) -> list[str]:
    """The canonical names `text` matches in the first tier where it matches any (see `resolve`)."""
    wanted = normalise(text)
    for tier in tiers:
        matches = [canonical for canonical, names in tier.items() if wanted in {normalise(n) for n in names}]
        if matches:
            return list(dict.fromkeys(matches))
    return []


def resolve(kind: str, text: str, tiers: Sequence[Mapping[str, Iterable[str]]], *, hint: str = "") -> str:
    """The one canonical name that `text` names, or UsageError.

    `tiers`: canonical name -> the names it answers to, most specific tier first. The first tier
    in which `text` matches anything decides: one canonical name is the answer, several are an
    ambiguity (the error lists them). No match in any tier: an error naming the known names.
    """
    matches = candidates(text, tiers)
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UsageError(f"{kind} {text!r} is ambiguous: it names {', '.join(matches)}.{hint and ' ' + hint}")
    raise unknown(kind, text, dict.fromkeys(c for tier in tiers for c in tier))


def match(text: str, names: Iterable[str]) -> str | None:
    """The one name of `names` that `text` spells (any case and separators), else None."""
    wanted = normalise(text)
    found = [name for name in names if normalise(name) == wanted]
    return found[0] if len(found) == 1 else None


# --------------------------------------------------------------------------------------------------
# Paper tables: `rolebench_eval/reference_tables/<file stem>.json`. The files keep their names;
# the table's name is the stem in kebab-case, and the stem itself is an alias.

# The RoleBench task each RoleLLM table reports (tasks/rolebench/tasks.toml); other tables report
# their `benchmark` task.
TABLE_TASKS = {
    "rolellm-en-instruction": "rolebench-en",
    "rolellm-en-role": "rolebench-en-rolegen",
    "rolellm-zh-instruction": "rolebench-zh",
}


def table_file_stems() -> list[str]:
    """The stems of the shipped reference table files (no JSON is parsed: cheap for `rbe ls`)."""
    from importlib import resources

    folder = resources.files("rolebench_eval.reference_tables")
    return sorted(entry.name[: -len(".json")] for entry in folder.iterdir() if entry.name.endswith(".json"))


def table_name(file_stem: str) -> str:
    """The kebab-case name of the paper table stored as `<file_stem>.json`."""
    return kebab(file_stem)


def resolve_table(text: str, file_stems: Iterable[str]) -> str:
    """The file stem of the table `text` names (its kebab-case name or old snake_case name)."""
    stems = list(file_stems)
    by_name = {table_name(stem): stem for stem in stems}
    found = resolve("paper table", text, [{name: {name, by_name[name]} for name in sorted(by_name)}],
                    hint="`rbe table` lists them.")
    return by_name[found]


def table_task(name: str, benchmark: str) -> str:
    """The task whose runs feed the table `name` (a kebab-case table name)."""
    return TABLE_TASKS.get(name, benchmark)


# --------------------------------------------------------------------------------------------------
# Metrics

# results.json metric key -> other names it is known by (the shown name comes from each run's own
# `metric_names`, so it needs no entry). A key with a judge suffix, `win_rate[<judge>]`, answers
# to its base key's aliases, with and without the suffix.
METRIC_ALIASES: dict[str, tuple[str, ...]] = {
    "EA": ("Expected Action",),
    "TC": ("Toxicity Control", "Toxicity"),
    "LH": ("Linguistic Habits",),
    "PC": ("Persona Consistency",),
    "AJ": ("Action Justification",),
    # One key, named per paper: PScore-L (OpenCharacter Table 3), PScore (Table 5), PersonaScore
    # (PersonaGym Table 1).
    "PersonaScore": ("PScore-L", "PScore", "Persona Score"),
    "CUS": ("ROUGE-L CUS",),
    "RAW": ("ROUGE-L RAW",),
    "SPE": ("ROUGE-L SPE",),
    "avg": ("ROUGE-L avg", "average"),
    # (win_rate is also `win rate` and `win-rate`: separators do not count.)
    "win_rate": ("WinRate",),
    "win_rate_tie_adjusted": ("win rate, ties ½", "win rate, ties 1/2"),
}

_SUFFIX = re.compile(r"^(?P<base>.+?)\[(?P<label>[^\]]+)\]$")


def metric_aliases(key: str) -> tuple[str, ...]:
    """Every alias of the metric stored as `key` (from METRIC_ALIASES)."""
    suffixed = _SUFFIX.match(key)
    if suffixed:
        base, label = suffixed["base"], suffixed["label"]
        names = (base, *METRIC_ALIASES.get(base, ()))
        return tuple(dict.fromkeys([*(f"{n}[{label}]" for n in names), *(f"{n} [{label}]" for n in names), *names]))
    return METRIC_ALIASES.get(key, ())


def metric_key(name: str, keys: Iterable[str] | None = None) -> str | None:
    """The results key a metric name or alias stands for: among `keys` when given (the first that
    `name` names), else among METRIC_ALIASES' keys; None when it names none."""
    pool = list(keys) if keys is not None else list(METRIC_ALIASES)
    wanted = normalise(name)
    for key in pool:
        if wanted == normalise(key) or wanted in {normalise(a) for a in metric_aliases(key)}:
            return key
    return None


@dataclass(frozen=True)
class MetricEntry:
    """One metric a command can name: `task/key` as results.json stores it, and its shown name."""

    qualified: str
    task: str
    key: str
    shown: str | None = None


def metric_tiers(entries: Sequence[MetricEntry]) -> list[dict[str, set[str]]]:
    """The names each metric answers to, most specific first: `TASK/key` or `TASK/shown name`;
    the key or shown name alone; its aliases, alone or qualified."""
    qualified_exact: dict[str, set[str]] = {}
    plain: dict[str, set[str]] = {}
    aliased: dict[str, set[str]] = {}
    for entry in entries:
        own = {entry.key, *([entry.shown] if entry.shown else [])}
        qualified_exact[entry.qualified] = {entry.qualified, *(f"{entry.task}/{n}" for n in own)}
        plain[entry.qualified] = own
        aliases = set(metric_aliases(entry.key))
        aliased[entry.qualified] = aliases | {f"{entry.task}/{n}" for n in aliases}
    return [qualified_exact, plain, aliased]


def resolve_metric(text: str, entries: Sequence[MetricEntry], flag: str = "metric") -> str:
    """The qualified name (`task/key`) of the one metric `text` names, or UsageError (exit 2)
    naming the candidates (ambiguous) or the known metrics (unknown)."""
    shown = {e.qualified: f"{e.qualified} ({e.shown})" if e.shown and e.shown != e.key else e.qualified for e in entries}
    matches = candidates(text, metric_tiers(entries))
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UsageError(f"{flag} {text!r} is ambiguous: {', '.join(shown[m] for m in matches)}; name it as TASK/METRIC.")
    names = [e.qualified for e in entries] + [e.shown for e in entries if e.shown]
    raise UsageError(
        f"unknown {flag} {text!r}.{did_you_mean(text, names)} Known metrics: {', '.join(shown.values()) or 'none'}."
    )


def entries_from_names(names: Iterable[str]) -> list[MetricEntry]:
    """MetricEntry for names already qualified as `task/key` (a comparison's metric names); a name
    without '/' is its own key."""
    entries = []
    for name in names:
        task, sep, key = name.partition("/")
        entries.append(MetricEntry(name, task if sep else "", key if sep else name))
    return entries


# --------------------------------------------------------------------------------------------------
# For `rbe ls`


def alias_lines(file_stems: Iterable[str], task_aliases: Mapping[str, Iterable[str]] | None = None) -> list[str]:
    """`rbe ls`'s lines of every alias: tables' old names, tasks' declared aliases, metric codes."""
    lines = ["any name: any case, and '-', '_' or a space alike (opencharacter_table3 = OpenCharacter-Table3)"]
    for stem in sorted(file_stems):
        if table_name(stem) != stem:
            lines.append(f"table {table_name(stem)}: also {stem}")
    for task, aliases in sorted((task_aliases or {}).items()):
        lines.append(f"task {task}: also {', '.join(aliases)}")
    for key, aliases in METRIC_ALIASES.items():
        lines.append(f"metric {key}: also {' | '.join(aliases)}")
    lines.append("metrics: also by the name the tables show (results' metric_names), and as TASK/NAME for any name")
    return lines
