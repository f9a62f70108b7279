"""TensorBoard in the training loop: off unless ``train.tensorboard`` asks, written through ``tensorboardX``
only (never ``torch.utils.tensorboard``, which would pull PyTorch into a JAX run), and a warning, not an error,
when it is asked for and ``tensorboardX`` is not installed.

``tensorboardX`` and ``torch.utils.tensorboard`` are stand-ins here (``sys.modules``), so the test runs the same
whether or not either is installed.
"""

from __future__ import annotations

import os
import sys
import types
import warnings

import pytest

from zoo.configs import apply_overrides, load_config
from zoo.training import train_and_evaluate

TINY = {"data.image_size": "(16,16)", "data.num_train": "8", "data.num_val": "2", "model.kwargs.features": "4",
        "model.kwargs.depth": "2", "train.batch_size": "4", "train.steps": "2", "train.schedule": "constant",
        "train.warmup_steps": "0", "train.log_every": "1", "train.eval_every": "2", "train.checkpoint_every": "2"}


class _Writer:
    """A stand-in ``SummaryWriter`` that records what it is given."""

    def __init__(self, logdir):
        self.logdir, self.scalars, self.closed = logdir, [], False
        self.created.append(self)

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def close(self):
        self.closed = True


def _writer_module(name: str) -> tuple[types.ModuleType, list]:
    created: list = []
    mod = types.ModuleType(name)
    mod.SummaryWriter = type("SummaryWriter", (_Writer,), {"created": created})
    return mod, created


@pytest.fixture
def torch_writer(monkeypatch):
    """A ``torch.utils.tensorboard`` that records every writer made from it (none may be)."""
    mod, created = _writer_module("torch.utils.tensorboard")
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", mod)
    return created


def _train(tmp_path, tensorboard=None):
    """Train TINY; ``tensorboard``: the field's value, or None for a config without the field (as a recipe that
    builds its own ``train`` section, e.g. ``outcome_smoke``, has)."""
    config = apply_overrides(load_config("smoke"), TINY)
    with config.unlocked():
        if tensorboard is None:
            del config.train["tensorboard"]
        else:
            config.train.tensorboard = tensorboard
    wd = str(tmp_path / "run")
    train_and_evaluate(config, wd, progress=False)
    return wd


def test_tensorboard_is_off_by_default(tmp_path, monkeypatch, torch_writer):
    tbx, created = _writer_module("tensorboardX")
    monkeypatch.setitem(sys.modules, "tensorboardX", tbx)
    assert load_config("smoke").train.tensorboard is False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wd = _train(tmp_path)  # no train.tensorboard field at all: off too
    assert not [w for w in caught if "tensorboard" in str(w.message).lower()]
    assert created == [] and torch_writer == []
    assert not os.path.exists(os.path.join(wd, "tensorboard"))


def test_tensorboard_asked_writes_through_tensorboardx_never_torch(tmp_path, monkeypatch, torch_writer):
    tbx, created = _writer_module("tensorboardX")
    monkeypatch.setitem(sys.modules, "tensorboardX", tbx)
    wd = _train(tmp_path, tensorboard=True)
    assert torch_writer == []
    (writer,) = created
    assert writer.logdir == os.path.join(wd, "tensorboard") and writer.closed
    tags = {tag for tag, _, _ in writer.scalars}
    assert "train/loss" in tags, tags


def test_tensorboard_asked_without_tensorboardx_warns_and_trains(tmp_path, monkeypatch, torch_writer):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import tensorboardX -> ImportError
    with pytest.warns(RuntimeWarning, match="tensorboardX is not installed"):
        wd = _train(tmp_path, tensorboard=True)
    assert torch_writer == []
    assert os.path.isfile(os.path.join(wd, "metrics.jsonl"))
