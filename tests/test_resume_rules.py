"""What `--resume` may change (applied) and what it refuses (naming the option, old and new value),
and that a refused or failed resume writes nothing, so a plain `--resume` still works afterwards."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner

from img2img.cli import cli
from img2img.training.state import checkpoint_path, load_checkpoint
from tests.helpers import write_permuted_pairs

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny nets, one intra-op thread

TINY = ["--image-size", "32", "--ngf", "4", "--ndf", "4", "--num-workers", "0", "--set", "load_size=32",
        "--set", "log_every=1", "--set", "sample_every=0", "--set", "val_every=0", "--set", "checkpoint_every=2",
        "--set", "tensorboard=false", "--set", "n_layers_d=2", "--set", "lr_schedule=constant"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_permuted_pairs(tmp_path_factory.mktemp("pairs"), count=4, size=36)


def train(*args: str):
    return CliRunner().invoke(cli, ["-q", "train", "pix2pix", *args])


@pytest.fixture
def run(dataset, tmp_path):
    """A finished 2-step run (checkpoint at step 2), lr 2e-4."""
    out = tmp_path / "run"
    result = train("--data", str(dataset), "--out", str(out), "--steps", "2", *TINY)
    assert result.exit_code == 0, result.output
    return out


def _snapshot(run) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_resume_applies_a_new_learning_rate_and_length(run) -> None:
    """The NaN guard's advice: lower the learning rate and --resume. The new rate is what trains."""
    result = train("--out", str(run), "--resume", "--steps", "4", "--lr", "1e-5", "--set", "checkpoint_every=1")
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((run / "config.yaml").read_text())["lr"] == 1e-5
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [(r["step"], r["lr_g"], r["lr_d"]) for r in log] == [(1, 2e-4, 2e-4), (2, 2e-4, 2e-4),
                                                                (3, 1e-5, 1e-5), (4, 1e-5, 1e-5)]
    payload = load_checkpoint(checkpoint_path(run))
    assert payload["step"] == 4 and payload["config"]["checkpoint_every"] == 1
    for opt in payload["optimizers"].values():
        assert [(g["lr"], g["initial_lr"]) for g in opt["param_groups"]] == [(1e-5, 1e-5)]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--ngf", "8"], "ngf=4"),
        (["--image-size", "64"], "image_size=32"),
        (["--set", "l1_weight=10"], "l1_weight=100.0"),
        (["--seed", "3"], "seed=0"),
    ],
)
def test_resume_refuses_other_changes_and_writes_nothing(run, args, named) -> None:
    before = _snapshot(run)
    result = train("--out", str(run), "--resume", "--steps", "4", *args)
    assert result.exit_code == 2, result.output
    message = result.output.strip()
    assert message.startswith("error: --resume cannot change ") and "\n" not in message
    assert named in message and args[-1] in message  # the old and the new value
    assert _snapshot(run) == before  # config.yaml included: nothing was rewritten
    # ...so the run still resumes as it was.
    again = train("--out", str(run), "--resume", "--steps", "3")
    assert again.exit_code == 0, again.output
    assert load_checkpoint(checkpoint_path(run))["step"] == 3


def test_a_resume_failing_after_the_config_check_writes_nothing(run) -> None:
    """A damaged checkpoint is found only when the state is loaded: config.yaml must stay as it was."""
    ckpt = checkpoint_path(run)
    good = ckpt.read_bytes()
    config_before = (run / "config.yaml").read_bytes()
    ckpt.write_bytes(good[: len(good) // 2])
    result = train("--out", str(run), "--resume", "--steps", "4", "--lr", "1e-5")
    assert result.exit_code == 2 and "last.pt" in result.output
    assert (run / "config.yaml").read_bytes() == config_before


def test_resume_with_nets_that_do_not_fit_writes_nothing(run, monkeypatch) -> None:
    """The state check of fit() (here: the networks no longer fit the checkpoint) runs before config.yaml is written."""
    from img2img.training import resume

    monkeypatch.setattr(resume, "check_resume_changes", lambda *a, **k: None)  # let the change through
    monkeypatch.setattr("img2img.training.run.check_resume_changes", lambda *a, **k: None)
    before = _snapshot(run)
    result = train("--out", str(run), "--resume", "--steps", "4", "--ngf", "8")
    assert result.exit_code == 2 and "does not match this run's configuration" in result.output
    assert _snapshot(run) == before
