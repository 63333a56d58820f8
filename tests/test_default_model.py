"""The bundled default model: loads with no arguments, scores Test-Dev as the README says,
and ``dfscan run`` scans the shipped samples with it."""
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from engines.checkpoint import load_checkpoint
from scanner.cli import main
from scanner.run.job import DEFAULT_ENGINE, open_engine

from _data import REALORFAKE

# The README's figures for engines/default/mobilenetv2.pt on realorfake Test-Dev (threshold 0.5)
README_TEST_DEV_AUC = 0.983
README_TEST_DEV_ACC = 0.918
SAMPLES = DEFAULT_ENGINE.parents[2] / "scanner" / "samples"


def test_default_model_is_bundled_small_and_loads_with_no_arguments():
    assert DEFAULT_ENGINE.is_file()
    assert DEFAULT_ENGINE.stat().st_size < 12 * 2**20  # fp32: fp16 moved scores by up to 0.008
    engine, path = open_engine(None, "cpu")
    assert path == DEFAULT_ENGINE and engine.config.arch == "mobilenetv2"
    model, config, payload = load_checkpoint(DEFAULT_ENGINE)
    assert config.input_size == (224, 224) and config.crop_margin == 1.3
    assert payload["extra"]["settings"]["val_split"] == "Val"  # chosen on Val, not a test split


@pytest.mark.skipif(not REALORFAKE.is_dir(), reason="needs ../shared/data/realorfake")
def test_default_model_scores_test_dev_as_the_readme_says(tmp_path):
    result = CliRunner().invoke(main, ["eval", "--data", str(REALORFAKE), "--split", "Test-Dev",
                                       "--out", str(tmp_path), "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    row = pq.read_table(tmp_path / "metrics.parquet").to_pylist()[0]
    assert row["n"] == 110
    assert row["roc_auc"] >= README_TEST_DEV_AUC - 0.01
    assert row["accuracy"] >= README_TEST_DEV_ACC - 0.01


def test_dfscan_run_scans_the_shipped_samples(tmp_path):
    result = CliRunner().invoke(main, ["run", str(SAMPLES / "Images"), "--out", str(tmp_path),
                                       "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    faces = pq.read_table(tmp_path / "faces.parquet").to_pydict()
    assert len(faces["face_id"]) == 14 and set(faces["status"]) == {"ok"}
    assert faces["label"].count(1) == 3 and (tmp_path / "metrics.parquet").is_file()
    assert sum(f.stat().st_size for f in SAMPLES.rglob("*") if f.is_file()) < 2**20
