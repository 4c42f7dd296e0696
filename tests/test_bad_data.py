"""Bad data and odd datasets: one ConfigError line naming the file or key and the fix, from
``run_recbole_dns(...)`` and from ``run_recbole_dns.py`` (exit status 2, no traceback); a loss that
turns nan stops the run with epoch, model and term, and its last good checkpoint resumes."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from recbole_dns import run_recbole_dns
from recbole_dns.errors import ConfigError, LossNotFiniteError
from recbole_dns.cli import main

ROOT = Path(__file__).resolve().parent.parent
HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
FAST = {"epochs": 1, "state": "WARNING", "show_progress": False, "train_batch_size": 4096,
        "dns_preset": "paper"}  # BPR_DNS as the paper has it (its shipped band needs more than 150 items)


def _rows(n_users: int, n_items: int, every: str | None = None) -> str:
    """About two thirds of the (user, item) pairs; user ``every`` (if given) gets every item."""
    lines = [f"{u}\t{i}\t1\t{u * 100 + i}" for u in range(1, n_users + 1) for i in range(1, n_items + 1)
             if (u + i) % 3]
    lines += [f"{every}\t{i}\t1\t{i}" for i in range(1, n_items + 1)] if every else []
    return HEADER + "\n".join(lines) + "\n"


def _path(root: Path, name: str) -> str:
    return str(root / name / f"{name}.inter")


#: name -> (contents of NAME.inter, or None for a folder without it; config; expected message with {path})
CASES = {
    # the four rows of the issue's table
    "empty": ("", {}, "{path} is empty: a .inter file needs a header line (e.g. user_id:token<TAB>item_id:token) "
              "and one line per interaction"),
    "header_only": (HEADER, {}, "{path} has a header and no rows: add one line per interaction"),
    "five_items": (_rows(20, 5), {"dns_k": 3},
                   "config key 'topk' has cut-off 10, larger than the 5 items of dataset 'five_items': use cut-offs "
                   "of at most 5 (e.g. topk: [5] with valid_metric: NDCG@5)"),
    "every_item": (_rows(30, 20, every="u99"), {"dns_k": 5},
                   "1 user(s) of dataset 'every_item' (e.g. user u99) interacted with all 20 items: no negative item "
                   "is left to sample for them; drop them with user_inter_num_interval: \"[0,20)\" (users with 20 "
                   "or more interactions are left out)"),
    # the other checks
    "no_inter": (None, {}, "{path} not found: put the dataset's interactions there (a RecBole atomic file whose "
                 "header is e.g. user_id:token<TAB>item_id:token)"),
    "other_fields": ("uid:token\tiid:token\n1\t2\n", {},
                     "{path}: the header has no user_id and no item_id field; RecBole expects user_id:token and "
                     "item_id:token (or set USER_ID_FIELD / ITEM_ID_FIELD to your names); found uid:token, iid:token"),
    "untyped": ("user_id\titem_id\n1\t2\n", {},
                "{path}: header field 'user_id' is not NAME:TYPE with TYPE one of token, token_seq, float, float_seq "
                "(fields are separated by field_separator='\\t')"),
    "filtered_out": (_rows(30, 20), {"dns_k": 5, "user_inter_num_interval": "[100,inf)"},
                     "no interactions of dataset 'filtered_out' are left after RecBole's filters ({path} has 400 "
                     "rows): loosen user_inter_num_interval='[100,inf)'"),
    "metric_cutoff": (_rows(20, 5), {"dns_k": 3, "topk": [5]},
                      "config key 'valid_metric' is NDCG@10 but topk is [5]: use a cut-off from topk, "
                      "e.g. valid_metric: NDCG@5"),
}
TABLE_ROWS = ["empty", "header_only", "five_items", "every_item"]


def _place(root: Path, name: str) -> tuple[dict, str]:
    text, config, message = CASES[name]
    (root / name).mkdir(parents=True, exist_ok=True)
    if text is not None:
        (root / name / f"{name}.inter").write_text(text)
    return config, message.format(path=_path(root, name))


def _args(root: Path, name: str, config: dict) -> list[str]:
    extra = [f"--{k}={v!s}".replace(" ", "") for k, v in {**FAST, **config}.items()]
    return [f"--dataset={name}", f"--data_path={root}", *extra]


@pytest.mark.parametrize("name", list(CASES))
def test_bad_data_is_one_line_from_the_api_and_the_command_line(name, tmp_path, monkeypatch, capsys):
    config, message = _place(tmp_path / "data", name)
    with pytest.raises(ConfigError) as err:
        run_recbole_dns(model="BPR_DNS", dataset=name, config_dict={"data_path": str(tmp_path / "data"),
                                                                    **FAST, **config}, read_cmd_line=False)
    assert str(err.value) == message
    # the command line's main(), in this process (RecBole reads the config keys from sys.argv)
    args = _args(tmp_path / "data", name, config)
    monkeypatch.setattr(sys, "argv", ["run_recbole_dns.py", *args])
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"run_recbole_dns.py: error: {message}"


@pytest.mark.parametrize("name", TABLE_ROWS)
def test_command_line_exits_2_without_traceback(name, tmp_path):
    config, message = _place(tmp_path / "data", name)
    out = subprocess.run([sys.executable, str(ROOT / "run_recbole_dns.py"), *_args(tmp_path / "data", name, config)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert out.stderr.strip().splitlines()[-1] == f"run_recbole_dns.py: error: {message}"


@pytest.mark.parametrize("name,fix", [
    ("five_items", {"topk": [5], "valid_metric": "NDCG@5"}),
    ("every_item", {"user_inter_num_interval": "[0,20)"}),
])
def test_the_suggested_fix_trains(name, fix, tmp_path):
    config, _ = _place(tmp_path / "data", name)
    result = run_recbole_dns(model="BPR_DNS", dataset=name, config_dict={"data_path": str(tmp_path / "data"), **FAST,
                                                                         **config, **fix}, read_cmd_line=False)
    assert 0.0 <= result["best_valid_score"] <= 1.0 and result["test_result"]


def test_nan_loss_names_epoch_model_and_term_and_the_last_checkpoint_resumes(prepare, tmp_path):
    common = dict(epochs=2, eval_step=0, dns_k=20, checkpoint_dir=str(tmp_path / "ckpt"))  # a checkpoint per epoch
    _, full, train, _, _ = prepare("BPR_DNS", **common)
    full.fit(train, None, saved=True)

    _, broken, train, _, _ = prepare("BPR_DNS", **common)
    model, epoch = broken.model, [None]
    hook, extra = model.on_epoch_start, model.extra_losses

    def on_epoch_start(e):
        epoch[0] = e
        return hook(e)

    model.on_epoch_start = on_epoch_start
    # the L2 term (BPR_DNS's one extra loss) diverges in epoch 1
    model.extra_losses = lambda b: tuple(t * (float("nan") if epoch[0] == 1 else 1.0) for t in extra(b))
    with pytest.raises(LossNotFiniteError) as err:
        broken.fit(train, None, saved=True)
    ckpt = broken.saved_model_file
    assert str(err.value) == (
        f"epoch 1, batch 0: the training loss of BPR_DNS is nan in term 'l2'; training stopped; the last good "
        f"checkpoint, {ckpt} (epoch 0), is kept: resume from it with --resume={ckpt}, with a smaller learning_rate"
    )
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the nan batch updated nothing
    assert torch.load(ckpt, weights_only=True)["epoch"] == 0

    _, resumed, train, _, _ = prepare("BPR_DNS", **common)
    resumed.resume_checkpoint(ckpt)
    resumed.fit(train, None, saved=True)
    for (name, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name  # resumed from the last good checkpoint == never interrupted

    _, slower, _, _, _ = prepare("BPR_DNS", **common, learning_rate=1e-4)
    slower.resume_checkpoint(ckpt)
    assert [g["lr"] for g in slower.optimizer.param_groups] == [1e-4]  # a resume takes this run's learning rate


def test_loss_terms_name_what_calculate_loss_returns(prepare, tmp_path):
    from recbole_dns.trainer import loss_term_names

    _place(tmp_path / "data", "every_item")
    for name in ("BPR", "BPR_DNS", "LightGCN", "LightGCN_DNS", "SGL", "SGL_DNS", "SimGCL", "SimGCL_DNS", "MixGCF",
                 "PRIS"):
        _, trainer, train, _, _ = prepare(name, dataset="every_item", data_path=str(tmp_path / "data"), dns_k=5,
                                          user_inter_num_interval="[0,20)", n_negs=4, n_clusters=2)
        model = trainer.model
        model.train()
        if hasattr(model, "on_epoch_start"):
            model.on_epoch_start(0)
        losses = model.calculate_loss(next(iter(train)).to(train.config["device"]))
        n = len(losses) if isinstance(losses, tuple) else 1
        assert len(model.loss_terms) == n, name
        assert loss_term_names(model, n) == list(model.loss_terms)
    assert loss_term_names(torch.nn.Linear(1, 1), 1) == ["loss"]
    assert loss_term_names(torch.nn.Linear(1, 1), 2) == ["term 1 of 2", "term 2 of 2"]


def test_command_line_divergence_is_one_line(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "run_recbole_dns.py"), "--learning_rate=1e30", "--epochs=1",
                          "--state=WARNING", "--show_progress=False", "--dns_preset=paper"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith("run_recbole_dns.py: error: epoch 0, batch ")
    assert ": the training loss of BPR_DNS is nan in term 'dns' (also 'l2'); training stopped; no checkpoint was " \
           "written before it" in line


def test_compare_puts_a_failed_run_in_its_table_and_runs_the_others(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("compare", ROOT / "benchmarks" / "compare.py")
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)
    _place(tmp_path / "data", "every_item")
    rows = compare.main(["--dataset=every_item", f"--data_path={tmp_path / 'data'}", "--models", "BPR_DNS",
                         "--set", "epochs=1", "user_inter_num_interval=[0,20)", "dns_preset=paper", "--grid", "dns_k=5,50",
                         "--out", str(tmp_path / "out")])
    ok, failed = rows
    assert 0 < ok["test_ndcg@10"] <= 1 and "error" not in ok
    message = ("ConfigError: config key 'dns_k' must be between 1 and the number of items of dataset 'every_item' "
               "(20); got 50")
    assert failed == {"model": "BPR_DNS", "error": message, "dns_k": 50}
    table = (tmp_path / "out" / "every_item.md").read_text()
    assert f"| BPR_DNS | 50 |  |  |  |  |  |  | {message} |" in table
