"""The experiments command: protocols, statistics, diagnostics and the files each experiment writes."""

import csv
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from recbole_dns.diagnostics import embedding_entropy, expected_static_fn_rate, positives_matrix
from recbole_dns.evaluation import SampledTestSets, full_ranking
from recbole_dns.experiments import run_experiment
from recbole_dns.stats import holm, paired_ttest, seed_test

ROOT = Path(__file__).resolve().parent.parent
TINY = {"epochs": 1, "train_batch_size": 4096}


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


# ---- statistics -----------------------------------------------------------------------------------------
def test_paired_ttest_by_hand():
    from scipy import stats

    a, b = [1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 2.0, 4.0, 4.0, 7.0]
    d = np.array(a) - np.array(b)  # -1, 0, -1, 0, -2: mean -0.8, sample sd sqrt(0.7)
    t_hand = -0.8 / (math.sqrt(0.7) / math.sqrt(5))
    t, p = paired_ttest(a, b)
    assert t == pytest.approx(t_hand, rel=1e-9) and t == pytest.approx(-2.13809, rel=1e-5)
    assert p == pytest.approx(2 * stats.t.sf(abs(t_hand), df=4), rel=1e-9)
    assert d.mean() == pytest.approx(-0.8)
    assert paired_ttest(a, a) == (0.0, 1.0)
    with pytest.raises(ValueError, match="two 1-D arrays of one length"):
        paired_ttest([1, 2], [1, 2, 3])


def test_seed_test_by_hand():
    """Paired by seed (the order of the dicts and a seed only one side has do not matter); the interval is the
    t-interval of the mean paired difference over the base's mean."""
    from scipy import stats

    a = {2: 0.33, 0: 0.30, 1: 0.32, 7: 0.9}  # seed 7: only in a
    b = {0: 0.28, 1: 0.29, 2: 0.30}
    d = np.array([0.02, 0.03, 0.03])  # seeds 0, 1, 2
    sd = math.sqrt(((d - d.mean()) ** 2).sum() / 2)
    t_hand = d.mean() / (sd / math.sqrt(3))
    half = stats.t.ppf(0.975, 2) * sd / math.sqrt(3)
    test = seed_test(a, b)
    assert test.n == 3
    assert test.p == pytest.approx(2 * stats.t.sf(t_hand, df=2), rel=1e-9)
    assert test.change == pytest.approx(d.mean() / 0.29, rel=1e-9)
    assert (test.low, test.high) == (pytest.approx((d.mean() - half) / 0.29), pytest.approx((d.mean() + half) / 0.29))
    assert (test.low > 0) == (test.p < 0.05)  # the interval excludes 0 exactly when p < 0.05
    wide = seed_test({0: 0.30, 1: 0.28, 2: 0.33}, b)
    assert wide.low < 0 < wide.high and wide.p > 0.05
    one = seed_test({0: 0.3}, {0: 0.25})
    assert one.n == 1 and math.isnan(one.p) and math.isnan(one.low) and one.change == pytest.approx(0.2)
    # the same difference on every seed: no spread, so no p-value and no interval (not p = 0)
    flat = seed_test({0: 0.75, 1: 0.5}, {0: 0.5, 1: 0.25})  # exact in binary: d = 0.25 twice
    assert flat.n == 2 and math.isnan(flat.p) and math.isnan(flat.low) and math.isnan(flat.high)
    assert flat.change == pytest.approx(0.25 / 0.375)
    same = seed_test({0: 0.3, 1: 0.2}, {0: 0.3, 1: 0.2})
    assert (same.p, same.change, same.low, same.high) == (1.0, 0.0, 0.0, 0.0)


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert np.allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    assert np.allclose(holm([0.5, 0.6]), [1.0, 1.0])  # capped at 1


# ---- diagnostics -------------------------------------------------------------------------------------------
def test_embedding_entropy_by_hand():
    users = torch.tensor([[0.0, 0.0]])  # softmax (1/2, 1/2): ln 2
    items = torch.tensor([[math.log(3.0), 0.0], [math.log(3.0), 0.0]])  # (3/4, 1/4), twice
    h_item = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert embedding_entropy(users, items) == pytest.approx((math.log(2) + 2 * h_item) / 2, rel=1e-6)
    with pytest.raises(ValueError, match="one width"):
        embedding_entropy(torch.zeros(1, 2), torch.zeros(1, 3))


def test_static_false_negative_rate_matches_its_expectation(prepare):
    config, trainer, train, valid, test = prepare("BPR", epochs=2, eval_step=0, log_fn_rate=True)
    trainer.fit(train, None, saved=False)
    measured = trainer.monitor.mean_fn_rates()["fn_rate_static"]
    expected = expected_static_fn_rate(train._dataset, positives_matrix(test))
    n = 2 * len(train._dataset)
    assert abs(measured - expected) < 4 * math.sqrt(expected * (1 - expected) / n), (measured, expected)
    assert 0.005 < expected < 0.05  # ml-100k: about 1.4 %


def test_dns_false_negatives_are_counted_from_the_drawn_negatives(prepare, monkeypatch):
    config, trainer, train, valid, test = prepare("BPR_DNS", epochs=1, eval_step=0, log_fn_rate=True, dns_k=10)
    positives = positives_matrix(test)
    seen = []
    original = trainer.model.dns_pool.sample

    def spy(users, m=1, items=None):
        negs = original(users, m, items)
        seen.append(np.asarray(positives[users.cpu().numpy().copy(), negs.cpu().numpy().copy()]).ravel())
        return negs

    monkeypatch.setattr(trainer.model.dns_pool, "sample", spy)
    trainer.fit(train, None, saved=False)
    brute = np.concatenate(seen).astype(np.float64)
    assert trainer.monitor.history[0]["fn_rate_dns"] == pytest.approx(brute.mean(), abs=1e-12)


# ---- protocols -------------------------------------------------------------------------------------------
def test_per_user_full_ranking_averages_to_recboles_metric(prepare):
    config, trainer, train, valid, test = prepare("BPR", epochs=2, eval_step=0)
    trainer.fit(train, None, saved=False)
    result, per_user = full_ranking(trainer, test)
    assert len(per_user.users) == len(per_user.values["ndcg"]) > 900
    for metric in ("ndcg", "recall", "map"):
        assert per_user.values[metric].mean() == pytest.approx(result[f"{metric}@10"], abs=6e-5)


def test_sampled_test_sets_are_fixed_by_their_seeds(prepare):
    _, _, _, _, test = prepare("BPR")
    a, b = SampledTestSets(test, 3, 50, seed=7), SampledTestSets(test, 3, 50, seed=7)
    c = SampledTestSets(test, 3, 50, seed=8)
    for t in range(3):
        assert torch.equal(a.negatives[t], b.negatives[t])  # same seeds: same negatives, call after call
        assert not torch.equal(a.negatives[t], c.negatives[t])
    assert not torch.equal(a.negatives[0], a.negatives[1])  # each set has its own seed
    neg = a.negatives[0]
    for row, u in enumerate(a.users.tolist()[:200]):
        seen = set(test.uid2positive_item[u].tolist()) | set(test.uid2history_item[u].tolist())
        assert len(set(neg[row].tolist())) == 50 and not seen & set(neg[row].tolist()) and 0 not in neg[row]


class ScoresByItemId(torch.nn.Module):
    """A stand-in model that scores item i with i (or a fixed random permutation of it)."""

    USER_ID = "user_id"

    def __init__(self, n_items, seed):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.scores = torch.randperm(n_items, generator=torch.Generator().manual_seed(seed)).float()

    def full_sort_predict(self, interaction):
        return self.scores.repeat(len(interaction["user_id"]), 1).view(-1)


def test_sampled_metrics_against_brute_force(prepare):
    config, _, _, _, test = prepare("BPR")
    sets = SampledTestSets(test, 2, 20, seed=1)
    model = ScoresByItemId(test._dataset.item_num, seed=3)
    results = sets.evaluate(model, config)
    for t, per_user in enumerate(results):
        for row in (0, 5, 100, 500):
            u = int(sets.users[row])
            pos = set(test.uid2positive_item[u].tolist())
            cand = list(pos) + sets.negatives[t][row].tolist()
            ranked = sorted(cand, key=lambda i: -model.scores[i])[:10]
            gains = [1 / math.log2(r + 2) for r, i in enumerate(ranked) if i in pos]
            ideal = sum(1 / math.log2(r + 2) for r in range(min(len(pos), 10)))
            assert per_user.values["ndcg"][row] == pytest.approx(sum(gains) / ideal, rel=1e-9)
            assert per_user.values["recall"][row] == pytest.approx(len(gains) / len(pos), rel=1e-9)


# ---- the experiments, end to end ---------------------------------------------------------------------------
def _markers_agree_with_pvalues(md_text, pvalues, alpha, marker, rows_key):
    """Every significant comparison puts its marker on the right row, and no marker is unexplained."""
    for row in pvalues:
        significant = row["p_holm"] not in ("", "nan") and float(row["p_holm"]) < alpha
        line = next(ln for ln in md_text.splitlines() if ln.startswith(f"| {row[rows_key]} |"))
        if significant:
            assert marker in line, (row, line)


def test_samplers_and_models_experiments_write_consistent_tables(tmp_path):
    out = tmp_path / "exp"
    run_experiment("samplers", ["ml-100k"], out, seeds=2, protocol="both", test_sets=2, negatives=30,
                   overrides=TINY, use_ray=False, alpha=0.01)
    rows = _csv(out / "samplers_runs.csv")
    assert len(rows) == 4 * 2 * (1 + 2)  # samplers x seeds x (full + 2 sampled sets)
    for col in ("label", "seed", "protocol", "test_set", "ndcg@10", "recall@10", "map@10", "fn_rate_static", "fn_rate_dns"):
        assert col in rows[0]
    assert {r["label"] for r in rows} == {"static random (BPR)", "dynamic random", "dynamic similar", "dynamic dissimilar"}
    assert all(r["fn_rate_dns"] == "" for r in rows if r["label"].startswith("static"))
    per_user = _csv(out / "samplers_per_user.csv")
    assert len(per_user) == 4 * 2 * 2 * 943  # labels x seeds x protocols x test users
    md = (out / "samplers.md").read_text()
    assert "Expected F-N rate of the static sampler" in md
    pvalues = _csv(out / "samplers_pvalues.csv")
    assert len(pvalues) == 2 * 3  # protocols x (dissimilar vs each other sampler)
    for protocol in ("full", "sampled"):
        section = md.split(f"**ml-100k, {protocol} ranking**")[1].split("**")[0]
        for row in (r for r in pvalues if r["protocol"] == protocol):
            line = next(ln for ln in section.splitlines() if ln.startswith(f"| {row['b']} |"))
            ndcg_cell = line.split("|")[4]
            assert ("*" in ndcg_cell) == (float(row["p_holm"]) < 0.01), (row, line)

    # models, through Ray, into the same folder: results.md holds both experiments
    run_experiment("models", ["ml-100k"], out, models=["BPR", "BPR_DNS"], seeds=2, protocol="full",
                   overrides=TINY, use_ray=True, parallel=2)
    md = (out / "models.md").read_text()
    assert "| improvement over BPR |" in md
    for row in _csv(out / "models_pvalues.csv"):
        if row["test"] == "*" and float(row["p_holm"]) < 0.01:
            line = next(ln for ln in md.splitlines() if ln.startswith(f"| {row['a']} |"))
            assert "*" in line
    results = (out / "results.md").read_text()
    assert "## samplers" in results and "## models" in results


def test_grid_and_entropy_experiments_write_figures_and_resume(tmp_path, capsys):
    out = tmp_path / "exp"
    kwargs = dict(seeds=1, overrides={**TINY, "epochs": 2}, use_ray=False, n_values=(1, 5), k_values=(10, 50),
                  n_fixed=5, k_fixed=50)
    run_experiment("grid", ["ml-100k"], out, **kwargs)
    rows = _csv(out / "grid_runs.csv")
    assert sorted((int(r["dns_n"]), int(r["dns_k"])) for r in rows) == [(1, 50), (5, 10), (5, 50)]  # shared point once
    md = (out / "grid.md").read_text()
    assert re.search(r"\| 50 \| 0\.\d{4} \|", md.split("against dns_k")[1])  # the shared point on both axes
    for name in ("fig2_full_ndcg_vs_n.png", "fig2_full_ndcg_vs_k.png"):
        assert (out / name).stat().st_size > 1000
    capsys.readouterr()
    run_experiment("grid", ["ml-100k"], out, **kwargs)  # resumed: nothing is rerun
    assert "0 run(s) to do, 3 already done" in capsys.readouterr().out

    run_experiment("entropy", ["ml-100k"], out, seeds=1, overrides={**TINY, "epochs": 3, "stopping_step": 1}, use_ray=False)
    epochs = _csv(out / "entropy_per_epoch.csv")
    assert sorted({r["label"] for r in epochs}) == ["BPR", "BPR_DNS"]
    for label in ("BPR", "BPR_DNS"):
        mine = [r for r in epochs if r["label"] == label]
        assert len(mine) == 3 and all(float(r["entropy"]) > 0 and r["valid_ndcg@10"] for r in mine)  # early stopping off
    assert (out / "fig3_entropy_ml-100k.png").stat().st_size > 1000


def test_a_failing_run_is_reported_and_the_others_finish(tmp_path):
    out = tmp_path / "exp"
    run_experiment("models", ["ml-100k"], out, models=["BPR", "BPR_DNS"], seeds=1, overrides={**TINY, "dns_k": 5000},
                   use_ray=False)
    md = (out / "models.md").read_text()
    assert "Runs that failed: ml-100k BPR_DNS seed 0: ConfigError: config key 'dns_k' must be between 1" in md
    assert "| BPR |" in md


def test_report_only_trains_nothing_and_reports_the_runs_on_disk(tmp_path, capsys):
    from recbole_dns.experiments import parser

    out = tmp_path / "exp"
    run_experiment("models", ["ml-100k"], out, models=["BPR"], seeds=1, overrides=TINY, use_ray=False)
    files = sorted((out / "runs").glob("*.json"))
    assert len(files) == 1
    capsys.readouterr()
    run_experiment("models", ["ml-100k"], out, models=["BPR"], seeds=2, overrides=TINY, use_ray=False, train=False)
    assert sorted((out / "runs").glob("*.json")) == files  # seed 1 was not trained
    assert "1 run(s) missing, not trained (report only), 1 done" in capsys.readouterr().out
    assert "| BPR |" in (out / "models.md").read_text()
    assert parser().parse_args(["models", "--report-only"]).report_only


@pytest.mark.parametrize("args,message", [
    (["samplers", "--protocol=some"], "invalid choice: 'some'"),
    (["samplers", "--set", "epochs"], "--set takes KEY=VALUE"),
    (["models", "--models", "BRP"], "unknown model 'BRP'"),
    (["samplers", "--seeds=0"], "must be >= 1"),
])
def test_bad_arguments_exit_2_with_one_line(args, message, tmp_path, capsys):
    from recbole_dns.experiments import main

    with pytest.raises(SystemExit) as exit_info:
        main([*args, f"--out={tmp_path}", "--no-ray"])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_command_line_and_recbole_dns_subcommand(tmp_path):
    out = subprocess.run([sys.executable, "-m", "recbole_dns.experiments", "nope"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 2 and "invalid choice: 'nope'" in out.stderr and "Traceback" not in out.stderr
    from recbole_dns.cli import main

    with pytest.raises(SystemExit) as exit_info:  # recbole-dns experiments ... is the same command
        main(["experiments", "grid", "--models", "NeuMF", f"--out={tmp_path}", "--no-ray"])
    assert exit_info.value.code == 2


def test_ablation_and_diagnose_experiments(tmp_path):
    out = tmp_path / "exp"
    variants = {"reference": "BPR", "rows": [
        {"label": "BPR", "model": "BPR"},
        {"label": "warm-up 1", "model": "BPR_DNS", "config": {"dns_warmup": 1}},
    ]}
    run_experiment("ablation", ["ml-100k"], out, seeds=2, overrides={**TINY, "epochs": 2}, use_ray=False, variants=variants)
    md = (out / "ablation.md").read_text()
    pvalues = _csv(out / "ablation_pvalues.csv")
    assert {(r["b"], r["metric"]) for r in pvalues} == {("warm-up 1", m) for m in ("ndcg@10", "recall@10", "map@10")}
    line = next(ln for ln in md.splitlines() if ln.startswith("| warm-up 1 |"))
    p = float(next(r["p_holm"] for r in pvalues if r["metric"] == "ndcg@10"))
    assert ("*" in line.split("|")[3]) == (p < 0.01) and "Rows: `BPR`: BPR {}" in md
    # the marks come from the paired t-test across the two seeds, recomputed here from the runs' CSV
    from scipy import stats

    runs = [r for r in _csv(out / "ablation_runs.csv") if r["protocol"] == "full"]
    ndcg = {(r["label"], int(r["seed"])): float(r["ndcg@10"]) for r in runs}
    mine, ref = np.array([ndcg[("warm-up 1", s)] for s in (0, 1)]), np.array([ndcg[("BPR", s)] for s in (0, 1)])
    row = next(r for r in pvalues if r["metric"] == "ndcg@10")
    assert row["seeds"] == "2" and float(row["p_raw"]) == pytest.approx(stats.ttest_rel(mine, ref).pvalue, rel=1e-6)
    assert float(row["change"]) == pytest.approx((mine - ref).mean() / ref.mean(), rel=1e-6)
    assert float(row["change_low95"]) < float(row["change"]) < float(row["change_high95"])
    assert 0 <= float(row["p_users"]) <= 1  # the user-level test, a secondary column
    assert f"{float(row['change']) * 100:+.1f}% [{float(row['change_low95']) * 100:+.1f}, " in line
    with pytest.raises(ValueError, match="`reference` must be one of the row labels"):
        run_experiment("ablation", ["ml-100k"], out, variants={**variants, "reference": "nope"}, use_ray=False)

    run_experiment("diagnose", ["ml-100k"], out, seeds=1, overrides={**TINY, "epochs": 2}, use_ray=False)
    md = (out / "diagnose.md").read_text()
    row = next(ln for ln in md.splitlines() if ln.startswith("| ml-100k | BPR_DNS |"))
    share = float(row.split("|")[5].split("±")[0])
    assert 0 < share < 1  # the contrastive negative's share of the negatives' softmax weight
    for name in ("quality_vs_time_ml-100k.png", "item_norm_vs_popularity_ml-100k.png"):
        assert (out / name).stat().st_size > 1000
    epochs = _csv(out / "diagnose_per_epoch.csv")
    assert all(r["train_loss"] for r in epochs) and any(r["grad_share_dns"] for r in epochs)


def test_ablation_chooses_each_rows_learning_rate_on_validation(tmp_path):
    out = tmp_path / "exp"
    variants = {"reference": "BPR", "rows": [
        {"label": "BPR", "model": "BPR", "choose": {"learning_rate": [1e-4, 0.02]}},
        {"label": "DNS", "model": "BPR_DNS", "choose": {"learning_rate": [1e-4, 0.02]}},
        {"label": "DNS fixed", "model": "BPR_DNS", "config": {"learning_rate": 0.01}},
    ]}
    variants["decide"] = {"rows": ["DNS"], "against": ["BPR", "DNS fixed"]}
    run_experiment("ablation", ["ml-100k"], out, seeds=2, overrides={**TINY, "epochs": 2}, use_ray=False, variants=variants)
    runs = _csv(out / "ablation_runs.csv")
    seeds = {}
    for r in runs:
        seeds.setdefault(r["label"], set()).add(r["seed"])
    results = [__import__("json").loads(f.read_text()) for f in (out / "runs").glob("*.json")]
    valid = {}  # brute force: every candidate's validation NDCG@10 at seed 0, from the run files
    for r in results:
        if r["spec"]["seed"] == 0:
            valid[r["spec"]["label"]] = r["valid"]["ndcg@10"]
    md = (out / "ablation.md").read_text()
    for row in ("BPR", "DNS"):
        grid = {f"{row} lr 0.0001", f"{row} lr 0.02"}
        first = max(grid, key=lambda c: valid[c])  # on an edge of a two-point grid: the grid grows once beyond it
        added = f"{row} lr {'0.04' if first.endswith('0.02') else '5e-05'}"
        cands = {c for c in valid if c.startswith(f"{row} lr ")}
        assert cands == grid | {added}
        best = max(cands, key=lambda c: valid[c])
        others = cands - {best}
        assert seeds[best] == {"0", "1"} and not others & set(seeds)  # the chosen one gets every seed; the table only it
        assert f"**{best}: {valid[best]:.4f}**" in md and all(f"{o}: {valid[o]:.4f}" in md for o in others)
        assert f"| {best} |" in md
    assert seeds["DNS fixed"] == {"0", "1"}
    # the decision, brute force: the chosen DNS candidate against each row, paired over the 2 seeds, Holm over 2
    from scipy import stats as st

    test = {(r["spec"]["label"], r["spec"]["seed"]): r["tests"][0]["ndcg@10"] for r in results}
    pick = {row: max((c for c in valid if c.startswith(f"{row} lr ")), key=lambda c: valid[c]) for row in ("BPR", "DNS")}
    pick["DNS fixed"] = "DNS fixed"
    mine = [test[(pick["DNS"], s)] for s in (0, 1)]
    ps, ups = [], []
    for other in ("BPR", "DNS fixed"):
        theirs = [test[(pick[other], s)] for s in (0, 1)]
        d = [a - b for a, b in zip(mine, theirs)]
        ps.append(1.0 if d[0] == d[1] == 0 else (0.0 if d[0] == d[1] else st.ttest_rel(mine, theirs).pvalue))
        ups.append(sum(d) > 0)
    holm = sorted(ps)
    adj = {0: min(1, 2 * holm[0]), 1: max(min(1, 2 * holm[0]), holm[1])}
    adj_p = [adj[sorted(range(2), key=lambda i: ps[i]).index(i)] for i in range(2)]
    wins = all(u and p < 0.01 for u, p in zip(ups, adj_p))
    line = next(ln for ln in md.splitlines() if ln.startswith("| DNS | ml-100k |"))
    assert line.rstrip().endswith("| yes |" if wins else "| no |")
    assert [f"({p:.2g})" in line for p in adj_p] == [True, True]
    ref = max(("BPR lr 0.0001", "BPR lr 0.02"), key=lambda c: valid[c])
    assert f"(reference: {ref})" in md and (out / "quality_vs_time_ml-100k.png").stat().st_size > 1000
    bad = {"reference": "BPR", "rows": [{"label": "BPR", "model": "BPR", "choose": {"learning_rate": 0.01}}]}
    with pytest.raises(ValueError, match="`choose` must map config keys to non-empty lists"):
        run_experiment("ablation", ["ml-100k"], out, variants=bad, use_ray=False)
    clash = {"reference": "BPR", "rows": [{"label": "BPR", "model": "BPR", "choose": {"learning_rate": [0.01]}},
                                          {"label": "BPR lr 0.01", "model": "BPR"}]}
    with pytest.raises(ValueError, match="must be unique"):
        run_experiment("ablation", ["ml-100k"], out, variants=clash, use_ray=False)
    with pytest.raises(ValueError, match="`choose_seeds` must be an integer >= 1"):
        run_experiment("ablation", ["ml-100k"], out, variants={**variants, "choose_seeds": 0}, use_ray=False)


def test_a_rows_runs_at_every_seed_are_queued_as_soon_as_its_own_choice_is_settled(tmp_path, monkeypatch):
    """Candidates of rows still choosing go first (a grid extension straight after the points it extends, each
    dataset's edge at once), a row's seeds join the queue the moment its choice is settled, and nothing runs
    twice; the picks are the brute-force best validation scores."""
    from dataclasses import asdict

    from recbole_dns.experiments import ablation, runs, scheduler

    # A's best rate lies beyond its grid: above it on ml-100k (two extensions), below it on ml-1m; B's inside
    peak = {("A", "ml-100k"): 0.04, ("A", "ml-1m"): 0.004, ("B", "ml-100k"): 0.005, ("B", "ml-1m"): 0.005}
    order = []

    def fake_run(spec, work_dir, threads=1):
        order.append((spec.dataset, spec.label, spec.seed))
        lr = dict(spec.config)["learning_rate"]
        valid = 0.0 if spec.label == "C" else -abs(math.log(lr / peak[spec.label[0], spec.dataset]))
        return {"status": "ok", "run_id": spec.run_id, "spec": asdict(spec), "valid": {"ndcg@10": valid + 1e-3 * spec.seed}}

    monkeypatch.setattr(scheduler, "safe_run", fake_run)
    variants = {"reference": "C", "extend_edges": 2, "rows": [
        {"label": "A", "model": "BPR", "choose": {"learning_rate": [0.005, 0.01]}},
        {"label": "B", "model": "BPR", "choose": {"learning_rate": [0.001, 0.005, 0.01]}},
        {"label": "C", "model": "BPR", "config": {"learning_rate": 0.001}}]}

    def opts():
        return dict(protocol="full", seeds=2, budget="quick", overrides={}, test_sets=10, negatives=100,
                    data_path=None, variants=variants)

    def both(*labels):  # seed 0 of each label on each dataset, in the runner's order
        return [(d, label, 0) for d in ("ml-100k", "ml-1m") for label in labels]

    run = dict(use_ray=False, cpus_per_run=1, parallel=0, train=True)
    first = opts()
    datasets = ["ml-100k", "ml-1m"]
    chosen, scores = ablation.choose(datasets, tmp_path, first, run)
    assert order == [*both("A lr 0.005", "A lr 0.01"), *both("A lr 0.02", "A lr 0.0025"), *both("A lr 0.04"),
                     *both("B lr 0.001", "B lr 0.005", "B lr 0.01"),
                     ("ml-100k", "C", 0), ("ml-100k", "C", 1), ("ml-1m", "C", 0), ("ml-1m", "C", 1),
                     ("ml-100k", "A lr 0.04", 1), ("ml-1m", "A lr 0.005", 1),
                     ("ml-100k", "B lr 0.005", 1), ("ml-1m", "B lr 0.005", 1)]
    assert {d: {k: v["label"] for k, v in c.items()} for d, c in chosen.items()} == {
        "ml-100k": {"A": "A lr 0.04", "B": "B lr 0.005", "C": "C"},
        "ml-1m": {"A": "A lr 0.005", "B": "B lr 0.005", "C": "C"}}
    assert [c for c, _ in scores["ml-1m"]["A"]] == ["A lr 0.005", "A lr 0.01", "A lr 0.02", "A lr 0.0025", "A lr 0.04"]
    assert first["edges"] == [("ml-100k", "A", ("learning_rate", 0.08))]  # still on the edge after two extensions
    # the final plan finds every run on disk; choosing again (a resumed study) trains nothing and picks the same
    final = runs.plan_runs(ablation.NAME, datasets, {**first, "chosen": chosen},
                           lambda d: ablation.rows(d, {**first, "chosen": chosen}), None)
    assert scheduler.execute(final, tmp_path, **run) == [] and len(final) == 12
    again = ablation.choose(datasets, tmp_path, opts(), run)
    assert again == (chosen, scores) and len(order) == 24


def test_rows_with_a_higher_priority_run_first_candidates_before_seeds(tmp_path, monkeypatch):
    """``priority`` orders the candidates among themselves and the seed runs among themselves (ties in the file's
    order); a row's seeds still wait for its choice, and a row without ``choose`` runs through the same queue."""
    from dataclasses import asdict

    from recbole_dns.experiments import ablation, scheduler

    order = []

    def fake_run(spec, work_dir, threads=1):
        order.append((spec.label, spec.seed))
        lr = dict(spec.config)["learning_rate"]
        return {"status": "ok", "run_id": spec.run_id, "spec": asdict(spec), "valid": {"ndcg@10": -abs(math.log(lr / 0.002))}}

    monkeypatch.setattr(scheduler, "safe_run", fake_run)
    grid = {"learning_rate": [0.001, 0.01]}
    variants = {"reference": "D", "extend_edges": 0, "rows": [
        {"label": "A", "model": "BPR", "choose": grid},
        {"label": "B", "model": "BPR", "choose": grid, "priority": 1},
        {"label": "C", "model": "BPR", "config": {"learning_rate": 0.001}, "priority": 2},
        {"label": "D", "model": "BPR", "config": {"learning_rate": 0.001}}]}
    opts = dict(protocol="full", seeds=2, budget="quick", overrides={}, test_sets=10, negatives=100, data_path=None,
                variants=variants)
    ablation.setup(["ml-100k"], tmp_path, opts, dict(use_ray=False, cpus_per_run=1, parallel=0, train=True))
    assert order == [("B lr 0.001", 0), ("B lr 0.01", 0), ("A lr 0.001", 0), ("A lr 0.01", 0),
                     ("C", 0), ("C", 1), ("B lr 0.001", 1), ("D", 0), ("D", 1), ("A lr 0.001", 1)]
    assert {k: v["label"] for k, v in opts["chosen"]["ml-100k"].items()} == {"A": "A lr 0.001", "B": "B lr 0.001",
                                                                              "C": "C", "D": "D"}
    # without ``choose`` anywhere, the rows still run by priority (and nothing is "chosen" in the report)
    order.clear()
    plain = {"reference": "D", "rows": variants["rows"][2:]}
    opts = dict(protocol="full", seeds=1, budget="quick", overrides={}, test_sets=10, negatives=100, data_path=None,
                variants=plain)
    ablation.setup(["ml-1m"], tmp_path, opts, dict(use_ray=False, cpus_per_run=1, parallel=0, train=True))
    assert order == [("C", 0), ("D", 0)] and "chosen" not in opts
    # a typo in a key, or a priority that is not a number, is an error naming the allowed keys
    row = {"label": "A", "model": "BPR"}
    for bad, match in (({"reference": "A", "rows": [{**row, "chose": grid}]}, r"unknown key\(s\) \['chose'\]; allowed: label"),
                       ({"reference": "A", "rows": [row], "seed": 1}, r"unknown key\(s\) \['seed'\]; allowed: reference"),
                       ({"reference": "A", "rows": [{**row, "priority": "high"}]}, "`priority` must be a number")):
        with pytest.raises(ValueError, match=match):
            ablation.check_variants(bad)


def test_a_best_point_on_the_edge_of_its_grid_extends_it():
    from recbole_dns.experiments.choosing import edge_extension

    assert edge_extension({"learning_rate": [0.0005, 0.001, 0.005]}, {"learning_rate": 0.005}) == ("learning_rate", 0.01)
    assert edge_extension({"learning_rate": [0.0005, 0.001, 0.005]}, {"learning_rate": 0.0005}) == ("learning_rate", 0.00025)
    assert edge_extension({"learning_rate": [0.0005, 0.001, 0.005]}, {"learning_rate": 0.001}) is None
    args = [{"dynamic": True, "candidate_num": m} for m in (4, 16, 32)]
    assert edge_extension({"train_neg_sample_args": args}, {"train_neg_sample_args": args[2]}) == (
        "train_neg_sample_args", {"dynamic": True, "candidate_num": 64})
    assert edge_extension({"train_neg_sample_args": args}, {"train_neg_sample_args": args[1]}) is None
    two = {"learning_rate": [0.001, 0.01], "reg_weight": [0.0, 1e-4]}
    assert edge_extension(two, {"learning_rate": 0.01, "reg_weight": 0.0}) == ("learning_rate/reg_weight", None)
    assert edge_extension({"dns_sampler": ["similar", "random"]}, {"dns_sampler": "random"}) is None
    assert edge_extension({"hard_neg_n": [1, 2, 4]}, {"hard_neg_n": 1}) == ("hard_neg_n", None)  # flagged, not extended
    ones = [{"dynamic": True, "candidate_num": m} for m in (1, 4)]
    assert edge_extension({"train_neg_sample_args": ones}, {"train_neg_sample_args": ones[0]}) == ("train_neg_sample_args", None)


def test_the_papers_study_runs_the_papers_dns_unless_told_otherwise():
    from recbole_dns.experiments import plan

    opts = dict(protocol="full", seeds=1, budget="quick", test_sets=10, negatives=100, models=None)
    for preset, expected in (("paper", "paper"), ("warmup_band", "warmup_band"), (None, None)):
        specs = plan("samplers", ["ml-100k"], {**opts, "dns_preset": preset})
        assert {s.config_dict.get("dns_preset") for s in specs if s.model == "BPR_DNS"} == {expected}
        assert all("dns_preset" not in s.config_dict for s in specs if s.model == "BPR")  # a base takes none
    rows = {"reference": "a", "rows": [{"label": "a", "model": "BPR_DNS"}]}
    specs = plan("ablation", ["ml-100k"], {**opts, "variants": rows, "dns_preset": "paper"})
    assert "dns_preset" not in specs[0].config_dict  # an ablation row runs what it says
    with pytest.raises(ValueError, match="dns_preset must be one of paper, warmup_band, warmup_band_hard, warmup_band_hard64 or None"):
        run_experiment("samplers", ["ml-100k"], "unused", dns_preset="fast", use_ray=False)


def test_epochs_and_seconds_to_reach_a_quality():
    from recbole_dns.experiments.report import Group, best_valid, reach

    def run(values):
        return {"curve": [{"epoch": e, "valid_ndcg@10": v, "time_s": 2.0 * (e + 1)} for e, v in enumerate(values)]}

    g = Group("d", "a", "BPR", {}, [run([0.1, 0.3, 0.5]), run([0.2, 0.4, 0.4])])
    assert best_valid(g) == pytest.approx(0.45)
    assert reach(g, 0.3) == "2.0 / 4 s"  # epoch 2 (4 s) in the first seed, epoch 2 (4 s) in the second
    assert reach(g, 0.45) == "3.0 / 6 s (1 of 2 seeds)"
    assert reach(g, 0.6) == "not reached" and reach(g, float("nan")) == "not reached"
    from recbole_dns.experiments.report import best_epoch_text

    g.results[0]["best_epoch"], g.results[1]["best_epoch"] = 2, 1
    assert best_epoch_text(g) == "2 (rising at the cap: 1 of 2)"  # the first seed still improved at its last epoch
    g.results[0]["curve"][-1]["valid_ndcg@10"] = 0.2
    assert best_epoch_text(g) == "2"


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parent.parent / "tune" / "ablations").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_ablation_files_are_valid_and_every_row_configures(path):
    import yaml

    from recbole_dns import Config
    from recbole_dns.experiments import check_variants, expand_choices

    variants = yaml.safe_load(path.read_text())
    check_variants(variants)
    for row in [c for r in variants["rows"] for c in expand_choices(r)]:
        for extra in [{}, *(row.get("datasets") or {}).values()]:
            config = Config(model=row["model"], dataset="ml-100k", read_cmd_line=False,
                            config_dict={"state": "WARNING", **(row.get("config") or {}), **extra})
            assert config["model"] == row["model"]
            for key, value in (row.get("config") or {}).items():
                assert config[key] == value


def test_a_choice_of_mappings_is_labelled_by_what_differs():
    from recbole_dns.experiments import expand_choices

    args = [{"distribution": "uniform", "dynamic": True, "candidate_num": m} for m in (4, 32)]
    row = {"label": "dynamic", "model": "BPR", "config": {"learning_rate": 0.001},
           "choose": {"train_neg_sample_args": args, "learning_rate": [0.001, 0.01]}}
    rows = expand_choices(row)
    assert [r["label"] for r in rows] == ["dynamic candidate_num 4 lr 0.001", "dynamic candidate_num 4 lr 0.01",
                                          "dynamic candidate_num 32 lr 0.001", "dynamic candidate_num 32 lr 0.01"]
    assert rows[2]["config"] == {"learning_rate": 0.001, "train_neg_sample_args": args[1]}


def test_a_run_keeps_its_id_when_recbole_fills_a_nested_config_value_in_place():
    """RecBole adds `alpha` to train_neg_sample_args in place: the spec and its result file must not change."""
    from recbole_dns.experiments.runs import RunSpec

    args = {"distribution": "uniform", "sample_num": 1, "dynamic": True, "candidate_num": 4}
    spec = RunSpec("ablation", "ml-100k", "BPR", "dynamic", 0, config=(("train_neg_sample_args", args),))
    before = spec.run_id
    spec.config_dict["train_neg_sample_args"]["alpha"] = 1.0  # what RecBole's Config does to the dict it gets
    assert spec.run_id == before and "alpha" not in dict(spec.config)["train_neg_sample_args"]


def test_local_ray_runs_its_workers_at_the_drivers_priority(monkeypatch):
    import ray

    from recbole_dns.launcher import init_ray

    seen = []
    monkeypatch.delenv("RAY_worker_niceness", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init",
                        lambda **kw: seen.append((kw.get("address"), os.environ.get("RAY_worker_niceness"))))
    assert init_ray() is True
    assert seen[-1] == (None, str(os.nice(0)))  # not Ray's default of 15
    monkeypatch.setenv("RAY_worker_niceness", "7")
    init_ray()
    assert seen[-1] == (None, "7")  # the user's setting wins


class _Stop(Exception):
    pass


def test_an_interrupted_run_resumes_from_its_last_validation_as_the_uninterrupted_run(tmp_path):
    """A run killed after a validation (a session's end) continues from it: pool, optimiser, random generators,
    early stopping, best checkpoint, curve and diagnostics as if it had never stopped."""
    from recbole_dns.experiments.runs import RunSpec, train_and_evaluate

    # the hardest pool items (`similar`) make the validation curve fall back after its peak (epoch 5 of 0-6, 0.18 against
    # 0.14 at epoch 6 on the CPU), so that the best checkpoint is neither the cut's nor the last epoch's
    config = {"epochs": 7, "eval_step": 1, "stopping_step": 2, "train_batch_size": 4096, "dns_preset": "paper",
              "dns_sampler": "similar", "dns_n": 2, "dns_k": 50, "learning_rate": 0.05, "log_fn_rate": True,
              "use_gpu": os.environ.get("RECBOLE_DNS_TEST_GPU", "0") == "1"}
    spec = RunSpec("ablation", "ml-100k", "BPR_DNS", "DNS", 1, config=tuple(sorted(config.items())))
    whole = train_and_evaluate(spec, str(tmp_path / "whole"), progress=lambda line: None)
    assert 3 < whole["best_epoch"] < 6  # the best checkpoint is neither the cut's nor the last epoch's

    def stop_after_epoch_4(line):  # the progress line follows the validation's saved state
        if "epoch 4/7" in line:
            raise _Stop

    with pytest.raises(_Stop):
        train_and_evaluate(spec, str(tmp_path / "cut"), progress=stop_after_epoch_4)
    state = tmp_path / "cut" / "checkpoints" / spec.run_id
    assert (state / "resume.pth").is_file() and [p.name for p in state.glob("resume-*.json")] == ["resume-3.json"]
    lines = []
    resumed = train_and_evaluate(spec, str(tmp_path / "cut"), progress=lines.append)
    assert "resumed after epoch 4" in lines[0] and "epoch 5/7" in lines[1]
    for key in ("best_epoch", "epochs", "valid", "tests", "fn_rates", "n_users"):
        assert resumed[key] == whole[key], key
    assert [c["valid_ndcg@10"] for c in resumed["curve"]] == [c["valid_ndcg@10"] for c in whole["curve"]]
    assert [r["fn_rate_dns"] for r in resumed["diagnostics"]] == [r["fn_rate_dns"] for r in whole["diagnostics"]]
    assert len(resumed["curve"]) == len(whole["curve"]) and len(whole["curve"]) >= 5
    for protocol, per_user in whole["per_user"].items():
        assert per_user.values.keys() == resumed["per_user"][protocol].values.keys()
        for metric, values in per_user.values.items():
            np.testing.assert_array_equal(resumed["per_user"][protocol].values[metric], values)
    assert not state.exists()  # a finished run leaves no state behind
