"""Datasets from --data_path (the offline ml-1m route of the README) and the error for a missing one."""

import os
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
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, str(ROOT / "run_recbole_dns.py"), "--dataset=no-such-data", f"--data_path={tmp_path}"],
        capture_output=True, text=True, env=env, timeout=600,
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
