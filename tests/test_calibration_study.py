"""``python -m eval.studies.calibration --quick`` on phantom pictures: folds trained, a temperature fitted and
stored with each fold model, ECE before/after on held-out folds, the conformal threshold checked on each fold,
the JSON/markdown/PNG outputs written; bad input is one error line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data_pipelines import phantoms
from eval.studies import calibration
from zoo.calibration import load_calibration


@pytest.fixture(scope="module")
def phantom_root(tmp_path_factory):
    """16 skin-lesion phantom pictures with masks, laid out as the chest X-ray folder (``cxr/``)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("data")
    folder = root / "cxr"
    folder.mkdir()
    pc = phantoms.PhantomConfig(kind="skin", shape=(40, 40), seed=2)
    for i in range(16):
        case = phantoms.make_phantom(pc, i)
        img = np.asarray(case["image"], np.float32)
        rgb = np.clip((img - img.min()) / max(float(np.ptp(img)), 1e-6) * 255, 0, 255).astype(np.uint8)
        Image.fromarray(rgb[..., :3] if rgb.shape[-1] >= 3 else rgb[..., 0]).save(folder / f"case_{i:02d}.png")
        Image.fromarray((np.asarray(case["label"]) > 0).astype(np.uint8) * 255).save(folder / f"case_{i:02d}_mask.png")
    return root


def test_quick_study_writes_calibrated_folds_and_conformal_check(phantom_root, tmp_path, capsys):
    out = tmp_path / "out"
    assert calibration.main(["--data_dir", str(phantom_root), "--family", "cxr", "--out", str(out), "--quick"]) == 0
    result = json.loads((out / "calibration_cxr.json").read_text(encoding="utf-8"))
    assert result["folds"] == 4 and len(result["folds_detail"]) == 4 and result["cases"] == 16
    for i, fold in enumerate(result["folds_detail"]):
        assert fold["temperature"] > 0 and 0 <= fold["ece_before"] <= 1 and 0 <= fold["ece_after"] <= 1
        assert fold["calibration_cases"] == 16 - fold["test_cases"] >= 9  # the other folds' held-out cases
        assert 0 <= fold["conformal_threshold"] <= 1 and 0 <= fold["miss_rate"] <= 1
        record = load_calibration(str(out / "runs" / "cxr" / f"fold{i}"))
        assert record["temperature"] == pytest.approx(fold["temperature"])
        assert record["conformal"]["threshold"] == pytest.approx(fold["conformal_threshold"])
        assert record["conformal"]["alpha"] == 0.1 and record["conformal"]["n"] == fold["calibration_cases"]
    assert sum(result["reliability_before"]["count"]) == 16 * 40 * 40  # every held-out pixel, native size
    assert (out / "reliability_cxr.png").stat().st_size > 1000
    assert "miss rate" in (out / "calibration_cxr.md").read_text(encoding="utf-8")
    assert "cxr: ECE" in capsys.readouterr().out


@pytest.mark.parametrize("argv,fragment", [
    (["--family", "brats"], "choose from isic, cxr"),
    (["--family", "isic"], "no isic_like/ folder"),
    (["--family", "cxr", "--folds", "8", "--alpha", "0.05"], "needs 19"),
])
def test_bad_input_is_one_line(phantom_root, tmp_path, capsys, argv, fragment):
    code = calibration.main(["--data_dir", str(phantom_root), "--out", str(tmp_path / "o"), "--quick", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err
