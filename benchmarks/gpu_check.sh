#!/usr/bin/env bash
# One check of this package on a GPU machine, in at most 10 minutes (each step has a time limit; the
# limits add up to 600 s), ending with one summary table:
#   1. the test suite on CUDA (tests/conftest.py reads RECBOLE_DNS_TEST_GPU=1);
#   2. the pool refresh benchmark (benchmarks/bench_refresh.py): 1e5 x 1e5 and 1e5 x 1e6 in float32,
#      float16 and bfloat16, and 1e6 x 1e6 (float32, 1e5 users measured, extrapolated) with
#      dns_refresh_mb 256 and 4096;
#   3. a DNS epoch against its base's (benchmarks/bench_dns.py): BPR and SimGCL on amazon-beauty (60-110 s
#      each on an H200 machine when a run loaded the dataset five times; twice on CUDA since);
#   4. one epoch and one validation of every model on the largest shared dataset (yelp2018).
#
#   bash benchmarks/gpu_check.sh           # on a machine with a GPU (exits 2 without one)
#   bash benchmarks/gpu_check.sh --cpu     # dry run of every step on the CPU, small: part of the tests,
#                                          # 2e4 x 2e4 / 2e3 x 1e5 refreshes, ml-100k
# Environment: PYTHON (default python), PYTEST_ADDOPTS (pytest's own), GPU_CHECK_OUT (folder for the JSON/XML, default a temporary one),
# DATA_PATH (default ../shared/datasets next to the checkout).
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${GPU_CHECK_OUT:-$(mktemp -d)}
mkdir -p "$OUT"
DATA_PATH=${DATA_PATH:-$(cd .. && pwd)/shared/datasets}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
MODE=cuda
[[ "${1:-}" == "--cpu" ]] && MODE=cpu
if [[ $MODE == cuda ]] && ! $PY -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: torch sees no CUDA device; run 'bash benchmarks/gpu_check.sh --cpu' for a dry run on the CPU" >&2
    exit 2
fi

declare -A SECONDS_OF STATUS_OF
step() {  # step NAME TIMEOUT_S COMMAND...: run with a time limit, record its status and duration
    local name=$1 limit=$2; shift 2
    echo "== $name (limit ${limit} s)"
    local start=$(date +%s)
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log" | tail -n 25
    STATUS_OF[$name]=${PIPESTATUS[0]}
    SECONDS_OF[$name]=$(( $(date +%s) - start ))
}

if [[ $MODE == cuda ]]; then
    export RECBOLE_DNS_TEST_GPU=1
    step tests 200 $PY -m pytest -q -p no:cacheprovider --junitxml="$OUT/tests.xml"
    step refresh 50 $PY benchmarks/bench_refresh.py --device cuda --sizes 100000x100000 100000x1000000 \
        --dtypes float32 float16 bfloat16 --json "$OUT/refresh.json"
    step refresh_1e6 60 $PY benchmarks/bench_refresh.py --device cuda --sizes 1000000x1000000 --max-users 100000 \
        --dtypes float32 --refresh_mb 256 4096 --json "$OUT/refresh_1e6.json"
    dns_steps() {
        for spec in BPR:amazon-beauty SimGCL:amazon-beauty; do
            $PY benchmarks/bench_dns.py --device cuda --base "${spec%%:*}" --dataset "${spec#*:}" --data_path "$DATA_PATH" \
                --epochs 3 --reps 3 --json "$OUT/dns_${spec%%:*}_${spec#*:}.json" || return
        done
    }
    export -f dns_steps; export PY OUT DATA_PATH
    step dns 170 bash -c dns_steps
    step epochs 120 $PY benchmarks/epoch_check.py --device cuda --dataset yelp2018 --data_path "$DATA_PATH" \
        --json "$OUT/epochs.json"
else
    step tests 300 $PY -m pytest -q -p no:cacheprovider --junitxml="$OUT/tests.xml" tests/test_pool.py tests/test_config.py
    step refresh 300 $PY benchmarks/bench_refresh.py --device cpu --sizes 20000x20000 2000x100000 \
        --dtypes float32 float16 --json "$OUT/refresh.json"
    step refresh_1e6 300 $PY benchmarks/bench_refresh.py --device cpu --sizes 300x1000000 --dtypes float32 \
        --refresh_mb 64 256 --json "$OUT/refresh_1e6.json"
    dns_steps() {
        $PY benchmarks/bench_dns.py --device cpu --base BPR --dataset ml-100k --epochs 2 --reps 1 --json "$OUT/dns_BPR_ml-100k.json"
    }
    export -f dns_steps; export PY OUT DATA_PATH
    step dns 300 bash -c dns_steps
    step epochs 300 $PY benchmarks/epoch_check.py --device cpu --dataset ml-100k --models BPR BPR_DNS LightGCN_DNS \
        --json "$OUT/epochs.json"
fi

# one summary table from what the steps wrote
STEPS="tests refresh refresh_1e6 dns epochs"
for s in $STEPS; do echo "$s ${STATUS_OF[$s]} ${SECONDS_OF[$s]}"; done > "$OUT/steps.txt"
$PY - "$OUT" "$MODE" <<'EOF'
import json, sys, xml.etree.ElementTree as ET
from pathlib import Path

out, mode = Path(sys.argv[1]), sys.argv[2]
steps = {name: (int(status), int(sec)) for name, status, sec in (l.split() for l in (out / "steps.txt").read_text().splitlines())}
rows = []

def status(name):
    code, sec = steps[name]
    return ("ok" if code == 0 else "TIMED OUT" if code == 124 else f"FAILED ({code})"), sec

s, sec = status("tests")
try:
    suite = ET.parse(out / "tests.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    n, f, e, sk = (int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
    rows.append((f"test suite ({'CUDA' if mode == 'cuda' else 'CPU, part'})", f"{n - f - e - sk} passed, {f} failed, {e} errors, {sk} skipped", s, sec))
except (OSError, ET.ParseError):
    rows.append(("test suite", "no report", s, sec))
for name in ("refresh", "refresh_1e6"):
    s, sec = status(name)
    try:
        data = json.loads((out / f"{name}.json").read_text())
    except OSError:
        rows.append((f"refresh ({name})", "no report", s, sec))
        continue
    for r in data["results"]:
        if "pool" in r:  # bench_refresh.py --index: the pool through a vector index, against the exact one
            rows.append((f"  ivf ({r['pool']} pool, nprobe {r['nprobe']})", f"{r['refresh_s']:.2f} s (build "
                         f"{r['build_s']:.2f} s) = {r['exact_full_s'] / r['refresh_s']:.1f}x faster than exact, recall "
                         f"{r['recall']:.3f}, extra {r['extra_mib']:.0f} MiB", "", ""))
            continue
        est = "~" if r["measured_users"] < r["users"] else ""
        text = (f"{est}{r['full_refresh_s']:.2f} s, {r['per_user_ms'] * 1e3:.1f} us/user, refresh/floor {r['ratio']:.2f}, "
                f"extra {r['extra_mib']:.0f} MiB (bound {r['refresh_mb']:.0f})")
        for dt, h in r["dtypes"].items():
            text += f"; {dt} {h['per_user_ms'] / r['per_user_ms']:.2f}x time, overlap {h['overlap']:.4f}"
        rows.append((f"refresh {r['users']:.0e} x {r['items']:.0e}, {data['device']}", text, s, sec))
        s, sec = "", ""
s, sec = status("dns")
files = sorted(out.glob("dns_*.json"))
for path in files:
    r = json.loads(path.read_text())
    rows.append((f"{r['base']}_DNS vs {r['base']}, {r['dataset']}", f"epoch {r['dns_epoch_s']:.3f} + refresh/n "
                 f"{r['refresh_in_rounds_s'] / r['n']:.3f} s vs {r['base_epoch_s']:.3f} s: {r['epoch_ratio']:.2f}x; refresh "
                 f"{r['refresh_s']:.3f} s = {r['refresh_over_floor']:.2f}x floor", s, sec))
    s, sec = "", ""
if not files:
    rows.append(("DNS epoch vs base", "no report", s, sec))
s, sec = status("epochs")
try:
    data = json.loads((out / "epochs.json").read_text())
    rows.append((f"load + split {data['dataset']}", f"{data['load_s']:.1f} s ({data['device']})", s, sec))
    for m in data["models"]:
        rows.append((f"1 epoch {m['model']}", f"train {m['train_s']:.2f} s, validation {m['valid_s']:.2f} s, "
                     f"valid NDCG@10 {m['valid_ndcg@10']:.4f}", "", ""))
except OSError:
    rows.append(("1 epoch of each model", "no report", s, sec))
print(f"\n| check | result | status | seconds |\n|---|---|---|---|")
for r in rows:
    print("| " + " | ".join(str(x) for x in r) + " |")
print(f"\ntotal {sum(sec for _, sec in steps.values())} s; files in {out}")
EOF
