"""Running many experiment runs: a queue that skips the runs already on disk, grows as results come in
(:data:`More`), and runs in parallel through Ray (or one after another in this process)."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from recbole_dns.experiments.runs import RunSpec, finished_ok, one_line, safe_run, save_result

#: further runs decided as results come in: ``more(result or None) -> (runs to do next, runs to do last)``
More = Callable[[dict | None], tuple[list[RunSpec], list[RunSpec]]]


def execute(specs: list[RunSpec], out: Path, *, address: str | None = None, use_ray: bool = True,
            cpus_per_run: float = 1, parallel: int = 0, train: bool = True, more: More | None = None,
            priority: Callable[[RunSpec], float] | None = None) -> list[dict]:
    """Run every spec whose result is not on disk yet (errored ones again), in parallel through Ray unless
    ``use_ray`` is false (``train=False``: none, only count them). ``more``, when given, is asked before the first
    run (with ``None``) and after each run (with its result) for further runs: the first list goes to the front of
    the queue, the second to its end (so a run that depends on others starts as soon as they are done, beside the
    rest); ``priority(spec)``, when given, orders each of the two parts (higher first, ties in order). Prints a
    line as each run finishes, with an estimate of the time left."""
    out.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    head: list[RunSpec] = []  # the runs that go first (``more``'s first list), then the tail
    tail: list[RunSpec] = []
    skipped = 0

    def add(new: list[RunSpec], front: bool = False) -> None:
        nonlocal skipped
        fresh = []
        for spec in dict.fromkeys(new):  # unique, in order
            if spec.run_id in seen:
                continue
            seen.add(spec.run_id)
            if finished_ok(out, spec):
                skipped += 1
            else:
                fresh.append(spec)
        if front:
            head[:0] = fresh
        else:
            tail.extend(fresh)
        if priority is not None:
            for part in (head, tail):
                part.sort(key=lambda spec: -priority(spec))  # stable: ties keep their order

    def left() -> int:
        return len(head) + len(tail)

    def pop() -> RunSpec:
        return (head or tail).pop(0)

    def ask(result: dict | None) -> None:
        if more is not None:
            first, last = more(result)
            add(first, front=True)
            add(last)

    add(list(specs))
    ask(None)
    if not train:
        print(f"{left()} run(s) missing, not trained (report only), {skipped} done (results in {out / 'runs'})",
              flush=True)
        return []
    print(f"{left()} run(s) to do, {skipped} already done (results in {out / 'runs'})", flush=True)
    if not left():
        return []
    start = time.perf_counter()
    finished: list[dict] = []
    pending: dict = {}

    def record(result: dict) -> None:
        save_result(out, result)
        finished.append(result)
        ask(result)
        elapsed = time.perf_counter() - start
        rest = elapsed / len(finished) * (left() + len(pending))
        total = len(finished) + left() + len(pending)
        print(f"-- {len(finished)}/{total} runs finished ({elapsed:.0f} s; ~{rest:.0f} s left)", flush=True)

    if not use_ray:
        while left():
            record(safe_run(pop(), str(out), threads=max(1, int(cpus_per_run))))
        return finished

    import ray

    from recbole_dns.launcher import init_ray

    started_here = init_ray(address, log_to_driver=True)
    try:
        remote = ray.remote(num_cpus=cpus_per_run)(safe_run)
        limit = parallel or max(1, int(ray.cluster_resources().get("CPU", 1) // max(cpus_per_run, 1e-9)))
        while left() or pending:
            while left() and len(pending) < limit:
                spec = pop()
                pending[remote.remote(spec, str(out), max(1, int(cpus_per_run)))] = spec
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                spec = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as err:  # noqa: BLE001 - a lost worker is an errored run
                    result = {"status": "error", "run_id": spec.run_id, "spec": asdict(spec), "error": one_line(err)}
                record(result)
    finally:
        if started_here:
            ray.shutdown()
    return finished
