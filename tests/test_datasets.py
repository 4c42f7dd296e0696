"""Datasets from --data_path (the offline ml-1m route of the README) and the error for a missing one."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import recbole

from recbole_dns import run_recbole_dns
from recbole_dns.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
ML100K = Path(recbole.__file__).parent / "dataset_example" / "ml-100k" / "ml-100k.inter"


def _place(tmp_path: Path, name: str) -> Path:
    """Atomic files of the embedded ml-100k put at DIR/NAME/NAME.inter."""
    folder = tmp_path / "data" / name
    folder.mkdir(parents=True)
    shutil.copy(ML100K, folder / f"{name}.inter")
    return tmp_path / "data"


def test_simgcl_dns_on_ml_1m_from_data_path(tmp_path):
    data = _place(tmp_path, "ml-1m")
    result = run_recbole_dns(
        model="SimGCL_DNS", dataset="ml-1m",
        config_dict={"data_path": str(data), "epochs": 1, "show_progress": False, "state": "WARNING",
                     "train_batch_size": 4096, "eval_batch_size": 409600},
        read_cmd_line=False,
    )
    assert 0.0 < result["test_result"]["ndcg@10"] <= 1.0


def test_missing_dataset_is_a_clear_error_naming_the_expected_file(tmp_path):
    with pytest.raises(ConfigError, match=r"no-such-data.*no-such-data\.inter"):
        run_recbole_dns(model="BPR_DNS", dataset="no-such-data",
                        config_dict={"data_path": str(tmp_path), "state": "WARNING"}, read_cmd_line=False)


def test_command_line_missing_dataset_is_one_line(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "run_recbole_dns.py"), "--dataset=no-such-data", f"--data_path={tmp_path}"],
        capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 2
    assert "no-such-data.inter" in out.stderr and "Traceback" not in out.stderr


def test_ml_1m_preset_keeps_ratings_of_4_and_above(tmp_path):
    """properties/dataset/ml-1m.yaml: the paper's MovieLens-1M keeps only ratings >= 4."""
    from recbole.data import create_dataset

    from recbole_dns import Config

    data = _place(tmp_path, "ml-1m")
    config = Config(model="BPR", dataset="ml-1m", read_cmd_line=False,
                    config_dict={"data_path": str(data), "state": "WARNING"})
    assert config["val_interval"] == {"rating": "[4,inf)"}
    ratings = [float(line.split("\t")[2]) for line in ML100K.read_text().splitlines()[1:]]
    assert create_dataset(config).inter_num == sum(r >= 4 for r in ratings) == 55375


def _two_columns(tmp_path: Path, name: str) -> Path:
    """DIR/NAME/NAME.inter with user and item only (the implicit files many people have)."""
    folder = tmp_path / "data" / name
    folder.mkdir(parents=True)
    rows = [line.split("\t")[:2] for line in ML100K.read_text().splitlines()]
    (folder / f"{name}.inter").write_text("\n".join("\t".join(r) for r in rows) + "\n")
    return tmp_path / "data"


def test_a_dataset_preset_naming_a_missing_field_is_one_line_that_says_how_to_switch_it_off(tmp_path):
    data = _two_columns(tmp_path, "ml-1m")
    out = subprocess.run(
        [sys.executable, str(ROOT / "run_recbole_dns.py"), "--model=BPR", "--dataset=ml-1m", f"--data_path={data}"],
        capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    for part in ("dataset preset", "ml-1m.yaml", "'rating'", "--dataset_preset=false"):
        assert part in out.stderr, (part, out.stderr)


def test_dataset_preset_false_trains_on_every_row_of_the_file(tmp_path):
    from recbole.data import create_dataset

    from recbole_dns import Config

    data = _two_columns(tmp_path, "ml-1m")
    config = Config(model="BPR", dataset="ml-1m", read_cmd_line=False,
                    config_dict={"data_path": str(data), "state": "WARNING", "dataset_preset": False})
    assert config["val_interval"] is None and config["load_col"] == {"inter": ["user_id", "item_id"]}
    assert create_dataset(config).inter_num == len(ML100K.read_text().splitlines()) - 1 == 100000


def test_a_user_key_replacing_the_preset_s_is_not_checked_against_the_preset(tmp_path):
    from recbole_dns.checks import check_atomic_files

    from recbole_dns import Config

    data = _two_columns(tmp_path, "ml-1m")
    base = {"data_path": str(data), "state": "WARNING"}
    with pytest.raises(ConfigError, match=r"sets 'load_col', which needs field 'rating'"):
        check_atomic_files(Config(model="BPR", dataset="ml-1m", read_cmd_line=False, config_dict=base))
    mine = {**base, "load_col": {"inter": ["user_id", "item_id"]}, "val_interval": None}
    check_atomic_files(Config(model="BPR", dataset="ml-1m", read_cmd_line=False, config_dict=mine))
