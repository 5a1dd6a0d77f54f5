"""How far a task's judges can be trusted: agreement, length bias, position bias.

Computed from a task's per-sample records (samples.jsonl) for every judged task, written into
results.json (`tasks.<task>.reliability`) and shown in report.md / report.html. Each figure comes
with the number of observations it rests on; a figure that cannot be computed is None.

Two kinds of observation are read from the records (`ratings_from_records`,
`verdicts_from_records`); a task whose records carry neither gets no section:

- a **rating**: one judge's score of one rated item (a PersonaGym question; a PingPong player turn,
  per criterion), with the length of the rated answer in characters;
- a **pairwise verdict**: one judge's verdict on the model under test against another answer, with
  the slot the model's answer was shown in (1 = first / "A", 2 = second / "B") and the model's
  outcome (win, loss, tie; None when the verdict could not be parsed). RoleBench's win rate
  provides them (`win_rate_order`: both orders by default); a task can provide them in the generic
  form below.

Generic record fields (any task; read when present):
  `reliability_ratings`: [{"item", "judge", "score", "criterion" (optional), "length" (optional)}]
  `pairwise_verdicts`: [{"item", "judge", "model_slot": 1|2, "outcome": "win"|"loss"|"tie"|None,
                         "length_difference" (optional: model answer minus the other, characters)}]
  `item` names the judged thing within the run (the two slot assignments of one comparison share
  it); it is prefixed with the record's unit.
  `answer_chars`: the answer's length, read instead of `answer` (a record kept for the results
  without its answer's text, tasks/personagym/outcome.keep).

The figures:

- `agreement` (two or more judges), per criterion, over the items at least two judges scored:
  `krippendorff_alpha` (ordinal, the `krippendorff` package, as the PingPong authors compute it),
  and per pair of judges `exact_agreement` (share of the items both scored with the same score) and
  `spearman` (scipy; None when either side is constant).
- `length_bias`, per judge and criterion: Spearman's rho between score and answer length; for
  pairwise verdicts, between the model's outcome (win 1, tie 0.5, loss 0) and its answer's length
  minus the other's. Near 0: length does not move the score; positive: longer answers score higher.
- `position_bias`, per pairwise judge: `first_slot_rate`, the share of decisive verdicts (win or
  loss) that pick slot 1 (0.5 without position bias); and `position_bias_gap`, over the items judged
  in both slot assignments with both verdicts decisive, the share whose two verdicts pick the same
  slot, i.e. follow the slot rather than the answer (0 for a judge that always picks the same
  answer, 1 = 100% for a judge that always picks slot A, or always B).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

DEFAULT_CRITERION = "score"
OUTCOME_VALUES = {"win": 1.0, "tie": 0.5, "loss": 0.0}


@dataclass(frozen=True)
class Rating:
    item: str
    judge: str
    score: float | None
    criterion: str = DEFAULT_CRITERION
    length: int | None = None


@dataclass(frozen=True)
class PairwiseVerdict:
    item: str
    judge: str
    model_slot: int  # 1: the model's answer was shown first ("A"); 2: second
    outcome: str | None  # the model's: "win", "loss", "tie"; None: unparsed or failed
    length_difference: int | None = None

    @property
    def chosen_slot(self) -> int | None:
        """The slot the judge picked (None for a tie or no verdict)."""
        if self.outcome == "win":
            return self.model_slot
        if self.outcome == "loss":
            return 3 - self.model_slot
        return None


# -- reading records ------------------------------------------------------------------------------


def _length(text: Any) -> int | None:
    return len(text) if isinstance(text, str) else None


def ratings_from_records(records: Iterable[Mapping[str, Any]]) -> list[Rating]:
    ratings: list[Rating] = []
    for record in records:
        unit = str(record.get("unit") or record.get("sample_id"))
        for entry in record.get("reliability_ratings") or ():
            ratings.append(Rating(f"{unit}/{entry['item']}", str(entry["judge"]), entry.get("score"),
                                  str(entry.get("criterion") or DEFAULT_CRITERION), entry.get("length")))
        for judgment in record.get("judgments") or ():
            if not isinstance(judgment, Mapping) or "judge" not in judgment:
                continue
            if "turns" in judgment and "means" in judgment:  # PingPong: every player turn, per criterion
                ratings += _dialogue_ratings(record, unit, judgment)
            elif "batch_position" in judgment:  # PersonaGym: one question
                # A record kept for the results has the answer's length, not its text.
                length = record["answer_chars"] if "answer_chars" in record else _length(record.get("answer"))
                ratings.append(Rating(f"{unit}/{record.get('sample_id')}", str(judgment["judge"]),
                                      judgment.get("score"), length=length))
    return ratings


def _dialogue_ratings(record: Mapping[str, Any], unit: str, judgment: Mapping[str, Any]) -> list[Rating]:
    transcript = record.get("turns") or []
    answers = [m.get("text", m.get("content")) for m in transcript if isinstance(m, Mapping) and m.get("role") == "assistant"]
    n_turns = len(answers)
    turns = judgment.get("turns")
    criteria = sorted(k.removesuffix("_score") for k in ((turns or [{}])[0]) if k.endswith("_score"))
    if turns is None:  # unscored: every turn unscored by this judge
        criteria = sorted(k for k in (record.get("scores") or {}) if k != "final")
    out = []
    for number in range(n_turns):
        for criterion in criteria:
            score = turns[number].get(f"{criterion}_score") if turns is not None and number < len(turns) else None
            out.append(Rating(f"{unit}/turn{number + 1}", str(judgment["judge"]), score, criterion,
                              _length(answers[number])))
    return out


def verdicts_from_records(records: Iterable[Mapping[str, Any]]) -> list[PairwiseVerdict]:
    verdicts: list[PairwiseVerdict] = []
    for record in records:
        unit = str(record.get("unit") or record.get("sample_id"))
        for entry in record.get("pairwise_verdicts") or ():
            verdicts.append(PairwiseVerdict(f"{unit}/{entry['item']}", str(entry["judge"]), int(entry["model_slot"]),
                                            entry.get("outcome"), entry.get("length_difference")))
        answer, other = record.get("answer"), record.get("baseline_answer")
        difference = len(answer) - len(other) if isinstance(answer, str) and isinstance(other, str) else None
        for judgment in record.get("judgments") or ():
            order = judgment.get("order") if isinstance(judgment, Mapping) else None
            if order not in ("model-first", "baseline-first"):  # RoleBench's pairwise ranking
                continue
            outcome = judgment.get("outcome")
            verdicts.append(PairwiseVerdict(
                f"{unit}/{record.get('sample_id')}", str(judgment["judge"]), 1 if order == "model-first" else 2,
                outcome if outcome in OUTCOME_VALUES else None, difference,
            ))
    return verdicts


# -- the figures ----------------------------------------------------------------------------------


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rho (scipy), None with fewer than 2 pairs or a constant side."""
    if len(x) < 2 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    from scipy import stats

    value = float(stats.spearmanr(x, y).statistic)
    return None if math.isnan(value) else value


def krippendorff_alpha(matrix: Sequence[Sequence[float | None]], level: str = "ordinal") -> float | None:
    """Krippendorff's alpha of a judges x items matrix (None = not rated), via `krippendorff`;
    None when it is undefined (fewer than two values in the data, no item rated twice)."""
    import numpy as np
    import krippendorff

    data = np.array([[np.nan if v is None else float(v) for v in row] for row in matrix], dtype=float)
    pairable = (np.sum(~np.isnan(data), axis=0) >= 2).any() if data.size else False
    values = set(data[~np.isnan(data)].tolist())
    if data.shape[0] < 2 or not pairable or len(values) < 2:
        return None
    value = float(krippendorff.alpha(reliability_data=data, level_of_measurement=level))
    return None if math.isnan(value) else value


def agreement(ratings: Sequence[Rating]) -> dict[str, Any] | None:
    judges = sorted({r.judge for r in ratings})
    if len(judges) < 2:
        return None
    out: dict[str, Any] = {}
    for criterion in sorted({r.criterion for r in ratings}):
        table: dict[str, dict[str, float]] = defaultdict(dict)
        for r in ratings:
            if r.criterion == criterion and r.score is not None:
                table[r.item][r.judge] = float(r.score)
        items = sorted(i for i, row in table.items() if len(row) >= 2)
        pairs = []
        for first, second in combinations(judges, 2):
            both = [(table[i][first], table[i][second]) for i in items if first in table[i] and second in table[i]]
            pairs.append({
                "judges": [first, second],
                "n_both_scored": len(both),
                "exact_agreement": sum(a == b for a, b in both) / len(both) if both else None,
                "spearman": spearman([a for a, _ in both], [b for _, b in both]),
            })
        matrix = [[table[i].get(judge) for i in items] for judge in judges]
        out[criterion] = {"n_items": len(items), "krippendorff_alpha": krippendorff_alpha(matrix), "pairs": pairs}
    return out


def length_bias(ratings: Sequence[Rating]) -> dict[str, dict[str, Any]]:
    groups: dict[str, dict[str, list[tuple[float, int]]]] = defaultdict(lambda: defaultdict(list))
    for r in ratings:
        if r.score is not None and r.length is not None:
            groups[r.judge][r.criterion].append((float(r.score), r.length))
    return {
        judge: {c: {"n": len(v), "spearman": spearman([s for s, _ in v], [n for _, n in v])} for c, v in sorted(by.items())}
        for judge, by in sorted(groups.items())
    }


def position_bias(verdicts: Sequence[PairwiseVerdict]) -> dict[str, dict[str, Any]]:
    out = {}
    for judge in sorted({v.judge for v in verdicts}):
        mine = [v for v in verdicts if v.judge == judge]
        decisive = [v for v in mine if v.chosen_slot is not None]
        by_item: dict[str, dict[int, PairwiseVerdict]] = defaultdict(dict)
        for v in mine:
            by_item[v.item][v.model_slot] = v
        both = [slots for slots in by_item.values() if len(slots) == 2]
        both_decisive = [s for s in both if s[1].chosen_slot is not None and s[2].chosen_slot is not None]
        following = sum(1 for s in both_decisive if s[1].chosen_slot == s[2].chosen_slot)
        scored = [(OUTCOME_VALUES[v.outcome], v.length_difference) for v in mine
                  if v.outcome in OUTCOME_VALUES and v.length_difference is not None]
        out[judge] = {
            "n_verdicts": len(mine),
            "n_unparsed": sum(1 for v in mine if v.outcome is None),
            "n_decisive": len(decisive),
            "first_slot_rate": sum(1 for v in decisive if v.chosen_slot == 1) / len(decisive) if decisive else None,
            "n_both_orders": len(both),
            "n_both_decisive": len(both_decisive),
            "n_slot_following": following,
            "position_bias_gap": following / len(both_decisive) if both_decisive else None,
            "length_bias": {"n": len(scored), "spearman": spearman([o for o, _ in scored], [d for _, d in scored])},
        }
    return out


def reliability(records: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The task's reliability section from its records; None when nothing in them was judged."""
    ratings = ratings_from_records(records)
    verdicts = verdicts_from_records(records)
    if not ratings and not verdicts:
        return None
    section: dict[str, Any] = {}
    if ratings:
        judges = sorted({r.judge for r in ratings})
        section["ratings"] = {
            "n": len(ratings),
            "n_scored": sum(1 for r in ratings if r.score is not None),
            "judges": judges,
            "criteria": sorted({r.criterion for r in ratings}),
        }
        section["agreement"] = agreement(ratings)
        section["length_bias"] = length_bias(ratings)
    if verdicts:
        section["position_bias"] = position_bias(verdicts)
    return section


# -- rendering -------------------------------------------------------------------------------------


def _num(value: Any) -> str:
    return "—" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))


def summary_lines(section: Mapping[str, Any] | None) -> list[str]:
    """One line per figure, for report.md and report.html (README: what each figure means)."""
    if not section:
        return []
    lines = []
    for criterion, entry in (section.get("agreement") or {}).items():
        pairs = "; ".join(
            f"{p['judges'][0]} vs {p['judges'][1]}: exact {_num(p['exact_agreement'])}, Spearman {_num(p['spearman'])} (n={p['n_both_scored']})"
            for p in entry["pairs"]
        )
        lines.append(f"judge agreement ({criterion}): Krippendorff's alpha {_num(entry['krippendorff_alpha'])} "
                     f"over {entry['n_items']} item(s); {pairs}")
    for judge, by in (section.get("length_bias") or {}).items():
        parts = ", ".join(f"{c} {_num(v['spearman'])} (n={v['n']})" for c, v in by.items())
        lines.append(f"length bias of {judge} (Spearman, score vs answer length): {parts}")
    for judge, entry in (section.get("position_bias") or {}).items():
        lines.append(
            f"position bias of {judge}: gap {_num(entry['position_bias_gap'])} "
            f"({entry['n_slot_following']} of {entry['n_both_decisive']} both-order pair(s) follow the slot), "
            f"first-slot rate {_num(entry['first_slot_rate'])} (n={entry['n_decisive']}), "
            f"length bias {_num(entry['length_bias']['spearman'])} (n={entry['length_bias']['n']})"
        )
    return lines
