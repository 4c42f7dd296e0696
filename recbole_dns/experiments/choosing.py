"""Choosing on validation: the candidates of an ablation row's ``choose`` grid, the pick with the best validation
NDCG@10, the grid's extension when the pick sits on its edge, and the order in which the runs are queued."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Callable

from recbole_dns.experiments.report import gather
from recbole_dns.experiments.runs import Row, RunSpec, finished_ok, plan_runs
from recbole_dns.experiments.scheduler import execute

#: short names of ``choose`` keys in the labels of an ablation's candidate rows
CHOOSE_NAMES = {"learning_rate": "lr", "reg_weight": "L2", "embedding_size": "d"}


def expand_choices(row: dict) -> list[dict]:
    """An ablation row with ``choose`` (key -> values) as one candidate row per combination of values, labelled
    ``"LABEL lr 0.001 ..."``; a row without ``choose`` as itself."""
    choose_ = row.get("choose") or {}
    if not choose_:
        return [row]
    keys = list(choose_)
    out = []
    for combo in itertools.product(*(choose_[k] for k in keys)):
        names = [_choice_name(k, v, choose_[k]) for k, v in zip(keys, combo)]
        out.append({**{k: v for k, v in row.items() if k != "choose"}, "label": " ".join([row["label"], *names]),
                    "config": {**(row.get("config") or {}), **dict(zip(keys, combo))}})
    return out


def _choice_name(key: str, value: Any, values: list) -> str:
    """``lr 0.001``; a mapping (e.g. ``train_neg_sample_args``) by the entries that differ among ``values``."""
    if isinstance(value, dict) and all(isinstance(v, dict) for v in values):
        keys = _differing(values, value) or list(value)
        return " ".join(_choice_name(k, value[k], [v.get(k) for v in values]) for k in keys)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{CHOOSE_NAMES.get(key, key)} {value:g}"
    return f"{CHOOSE_NAMES.get(key, key)} {value}"


def choose(name: str, rows: Callable[[str, dict], list[Row]], datasets: list[str], out: Path, opts: dict,
           run: dict) -> tuple[dict, dict]:
    """Train every candidate of the rows with ``choose`` (``choose_seeds`` seeds) and pick, per dataset and row, the
    candidate with the best mean validation NDCG@10. A pick on the edge of its grid (the lowest or highest value of
    a one-dimensional numeric grid) extends the grid by halving or doubling that value (each dataset's extension,
    for the row on every dataset), up to ``extend_edges`` times (default 1), and chooses again. A row's runs at
    every seed start as soon as its own choice is settled (the rows without ``choose`` at once), beside the other
    rows' candidates, which go first; within each of the two, the runs of a row with a higher ``priority`` (default
    0) go before the others. ``rows(dataset, opts)`` are experiment ``name``'s rows. Returns ``{dataset: {row label:
    row}}`` (the candidate in place of a row with ``choose``) and ``{dataset: {row label: [(candidate, valid
    NDCG@10)]}}``; the rows' grids in ``opts["variants"]`` grow by the extensions, and ``opts["edges"]`` lists the
    picks still on an edge."""
    variants = opts["variants"] = {**opts["variants"], "rows": [dict(r) for r in opts["variants"]["rows"]]}
    seeds, limit = int(variants.get("choose_seeds", 1)), int(variants.get("extend_edges", 1))
    base = {k: v for k, v in opts.items() if k != "chosen"}
    grown = {row["label"]: 0 for row in variants["rows"]}
    settled: set[str] = set()
    ran: set[str] = set()  # run ids finished (or failed) in this call
    priority: dict[str, float] = {}  # run id -> its row's priority

    def plan(picked: dict[str, list[dict]], n_seeds: int) -> list[RunSpec]:
        """The runs of ``picked`` (``{dataset: [rows]}``) at ``n_seeds`` seeds."""
        trial = {**base, "seeds": n_seeds, "chosen": {d: {r["label"]: r for r in picked.get(d, [])} for d in datasets}}
        specs = plan_runs(name, datasets, trial, lambda dataset: rows(dataset, trial), None)
        for d, picks_ in picked.items():
            mine = {r["label"]: r.get("priority", 0) for r in picks_}
            priority.update({s.run_id: mine[s.label] for s in specs if s.dataset == d and s.label in mine})
        return specs

    def candidates(row: dict) -> list:
        return plan({d: expand_choices(row) for d in datasets}, seeds)

    def finished(spec: Any) -> bool:
        """Run in this call (ok or not), or ok on disk from before (an errored one runs again)."""
        return spec.run_id in ran or finished_ok(out, spec)

    def picks(row: dict) -> dict[str, tuple[dict | None, list, Any]]:
        """Per dataset: the best candidate (``None`` when all failed), every candidate's score, the edge extension."""
        groups, _ = gather(out, candidates(row))
        valid = {(g.dataset, g.label): g.mean_of_valid("ndcg@10") for g in groups}
        out_ = {}
        for dataset in datasets:
            scored = [(c, valid.get((dataset, c["label"]), float("nan"))) for c in expand_choices(row)]
            finite = [(c, v) for c, v in scored if v == v]  # a row whose candidates all failed is left out
            best = max(finite, key=lambda cv: cv[1])[0] if finite else None
            out_[dataset] = (best, scored, None if best is None else edge_extension(row["choose"], best["config"]))
        return out_

    def advance(result: dict | None) -> tuple[list, list]:
        """The runs that can start now: the candidates still to run (first) and the settled rows' seeds (last)."""
        if result is not None:
            ran.add(result["run_id"])
        first, last = [], []
        for row in variants["rows"]:
            label = row["label"]
            if label in settled:
                continue
            if not row.get("choose"):
                settled.add(label)
                last += plan({d: [row] for d in datasets}, opts["seeds"])
                continue
            while True:
                missing = [s for s in candidates(row) if not finished(s)]
                if missing:
                    first += missing
                    break
                picked = picks(row)
                # every dataset's extension at once (two datasets may sit on opposite edges of the same grid)
                grow = [b for _, _, b in picked.values() if b is not None and b[1] is not None and b[1] not in row["choose"][b[0]]]
                if grow and grown[label] < limit:
                    for key, value in grow:
                        if value not in row["choose"][key]:
                            row["choose"] = {**row["choose"], key: [*row["choose"][key], value]}
                            print(f"{label}: the best point is on the edge of its grid; adding {key} {value}", flush=True)
                    grown[label] += 1
                    continue
                settled.add(label)
                best = {d: [b] for d, (b, _, _) in picked.items() if b is not None}
                last += plan(best, opts["seeds"])
                names = ", ".join(f"{d}: {b[0]['label']}" for d, b in best.items()) or "nothing"
                print(f"{label}: chose {names}; its runs at every seed can start", flush=True)
                break
        return first, last

    n = sum(len(expand_choices(row)) for row in variants["rows"] if row.get("choose"))
    if n:
        print(f"choosing on validation: {n} candidate row(s) x {seeds} seed(s) per dataset", flush=True)
    execute([], out, **run, more=advance, priority=lambda spec: priority.get(spec.run_id, 0))
    chosen: dict = {d: {} for d in datasets}
    scores: dict = {d: {} for d in datasets}
    edges: list = []
    picked = {row["label"]: picks(row) for row in variants["rows"] if row.get("choose")}
    for dataset in datasets:
        for row in variants["rows"]:
            if not row.get("choose"):
                chosen[dataset][row["label"]] = row
                continue
            best, scored, beyond = picked[row["label"]][dataset]
            scores[dataset][row["label"]] = [(c["label"], v) for c, v in scored]
            if best is not None:
                chosen[dataset][row["label"]] = best
                if beyond is not None:
                    edges.append((dataset, row["label"], beyond))
    opts["edges"] = edges
    return chosen, scores


def edge_extension(choose_: dict, config: dict) -> tuple[str, Any] | None:
    """``(key, value beyond the edge)`` when the chosen ``config`` sits at the lowest or highest value of a
    one-dimensional numeric grid (a number, or a mapping whose only differing entry is a number): the value
    halved or doubled (integers rounded); ``(key, None)`` on the edge of a grid this cannot extend; ``None`` inside."""
    varying = {k: v for k, v in choose_.items() if len(v) > 1}
    if len(varying) != 1:
        return ("/".join(varying), None) if any(_on_edge(v, config[k]) for k, v in varying.items()) else None
    key, values = next(iter(varying.items()))
    if not _on_edge(values, config[key]):
        return None
    entry = _numeric_entry(values)
    if entry is not None:
        new = _beyond([v[entry] for v in values], config[key][entry])
        return (key, None if new is None else {**config[key], entry: new})
    return (key, _beyond(values, config[key]) if all(_is_num(v) for v in values) else None)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _differing(values: list, keys: Any) -> list:
    """The ``keys`` whose values differ among the mappings ``values``."""
    return [k for k in keys if len({repr(v.get(k)) for v in values}) > 1]


def _numeric_entry(values: list) -> str | None:
    """The one entry that differs among the mappings ``values`` when it is a number in each, else ``None``."""
    if not all(isinstance(v, dict) for v in values):
        return None
    inner = _differing(values, values[0])
    return inner[0] if len(inner) == 1 and all(_is_num(v.get(inner[0])) for v in values) else None


def _on_edge(values: list, value: Any) -> bool:
    entry = _numeric_entry(values)
    if entry is not None:
        return _on_edge([v[entry] for v in values], value[entry])
    return all(_is_num(v) for v in values) and value in (min(values), max(values))


def _beyond(values: list, value: Any) -> Any:
    """``value`` doubled (top edge) or halved (bottom edge); ``None`` for an integer grid already at 1."""
    new = value * 2 if value == max(values) else value / 2
    if all(isinstance(v, int) for v in values):
        return int(round(new)) if round(new) >= 1 and round(new) != value else None
    return float(f"{new:.6g}")


