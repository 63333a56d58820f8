"""dfscan train: a small real run learns, leaves a loadable checkpoint, history and PNGs, resumes."""
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from engines.checkpoint import load_checkpoint, read_checkpoint
from engines.models import create_model
from engines.train.loop import evaluate, last_path
from engines.train.data import CropSet, Normalize
from scanner.run.training import split_crops
from scanner.cli import main

from _data import REALORFAKE

pytestmark = pytest.mark.skipif(not REALORFAKE.is_dir(), reason="needs ../shared/data/realorfake")

# customcnn at 64 px on 32 Train / 32 Val faces: a few seconds per epoch on two CPU cores
SMALL = ["--arch", "customcnn", "--data", str(REALORFAKE), "--res", "64", "--limit", "32",
         "--batch-size", "8", "--lr", "3e-4", "--augment", "light", "--quiet"]
HISTORY_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_auc",
                   "val_auc_corrupt", "val_acc_corrupt", "lr", "seconds", "threshold"]


def train(*args):
    result = CliRunner().invoke(main, ["train", *SMALL, *args])
    return result


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Two epochs from scratch, then ``--resume`` to a third."""
    out = tmp_path_factory.mktemp("train") / "model.pt"
    first = train("--epochs", "2", "--out", str(out))
    assert first.exit_code == 0, first.output
    history_2 = pq.read_table(out.parent / "history.parquet").to_pylist()
    second = train("--epochs", "3", "--out", str(out), "--resume")
    assert second.exit_code == 0, second.output
    return out, history_2, second


def test_train_writes_checkpoint_history_and_plots(run):
    out, history_2, _ = run
    assert [r["epoch"] for r in history_2] == [1, 2]
    history = pq.read_table(out.parent / "history.parquet")
    assert history.column_names == HISTORY_COLUMNS
    for name in ("curves.png", "roc.png", "det.png"):
        assert (out.parent / name).stat().st_size > 1000
    model, config, payload = load_checkpoint(out)  # weights_only=True inside
    assert config.arch == "customcnn" and config.input_size == (64, 64)
    assert 1 <= payload["extra"]["epoch"] <= 3
    state = torch.load(last_path(out), map_location="cpu", weights_only=True)
    assert {"optimizer", "rng_torch", "history", "best_epoch"} <= set(state["extra"])


def test_training_lowers_the_training_loss(run):
    out, _, _ = run
    _, config, _ = load_checkpoint(out)
    data = CropSet.collect("Train", split_crops(REALORFAKE, "Train", config, limit=32, log=lambda m: None))
    torch.manual_seed(0)  # the run's seed: the same initial weights
    initial = create_model("customcnn", input_size=config.input_size)
    trained, _, _ = load_checkpoint(last_path(out))
    before = evaluate(initial, data.images, data.labels, Normalize(config))["loss"]
    after = evaluate(trained, data.images, data.labels, Normalize(config))["loss"]
    assert after < before
    history = pq.read_table(out.parent / "history.parquet").column("train_loss").to_pylist()
    assert history[-1] < history[0]


def test_resume_continues_after_the_saved_epoch(run):
    out, history_2, second = run
    history = pq.read_table(out.parent / "history.parquet").to_pylist()
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert history[:2] == history_2  # the first two epochs are kept, not redone
    assert "resuming" in second.output and "after epoch 2" in second.output
    assert read_checkpoint(last_path(out))["extra"]["epoch"] == 3


def test_resume_without_saved_state_is_one_line_error(tmp_path):
    result = train("--epochs", "1", "--out", str(tmp_path / "m.pt"), "--resume")
    assert result.exit_code != 0
    assert "nothing to resume" in result.output and "Traceback" not in result.output


def test_unknown_split_names_the_splits_found(tmp_path):
    result = train("--epochs", "1", "--out", str(tmp_path / "m.pt"), "--val-split", "Nope")
    assert result.exit_code != 0
    assert "Test-Dev" in result.output and "Nope" in result.output


def test_eval_writes_metrics_and_curves(run, tmp_path):
    out, _, _ = run
    result = CliRunner().invoke(main, ["eval", "--engine", str(out), "--data", str(REALORFAKE),
                                       "--split", "Val", "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    metrics = pq.read_table(tmp_path / "metrics.parquet").to_pylist()
    assert metrics[0]["subset"] == "all" and metrics[0]["n"] == 80
    assert (tmp_path / "roc.png").is_file() and (tmp_path / "det.png").is_file()
    assert "AUC" in result.output
