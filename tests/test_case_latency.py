"""``benchmarks.case_latency``'s rows and arguments: the zoo's (cold, warm in a new process on the filled cache, warm in
the same process: the next case), MONAI's and nnU-Net's (cold: from process start to the first case written; warm:
the second case in the same process), nnU-Net's channel files, the errors of bad arguments, MONAI's planned 3D path
in its own process on a tiny volume, and the phase worker on two cases."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from benchmarks import case_latency, frameworks


def _nnunet_model(folder, channels=("FLAIR", "T1c")):
    folder.mkdir(parents=True)
    (folder / "dataset.json").write_text(json.dumps({"channel_names": {str(i): c for i, c in enumerate(channels)}}))
    return folder


def _brats_case(folder, names=("VSD.Brain.XX.O.MR_Flair.nii.gz", "VSD.Brain.XX.O.MR_T1c.nii.gz", "OT.nii.gz")):
    folder.mkdir(parents=True)
    for n in names:
        (folder / n).write_bytes(b"")
    return folder


def test_peer_rows_split_the_process_into_cold_and_warm(monkeypatch):
    seen = {}
    cases = [{"import_s": 2.0, "load_s": 1.0, "read_s": 0.5, "predict_s": 4.0, "write_s": 0.5},
             {"import_s": 0.0, "load_s": 0.0, "read_s": 0.25, "predict_s": 3.0, "write_s": 0.25}]

    def fake_run(cmd, cache, timeout):
        seen.update(cmd=cmd, cache=cache)
        return 20.0, "noise\n" + frameworks.RESULT_PREFIX + json.dumps({"cases": cases}) + "\n"

    monkeypatch.setattr(case_latency, "_run", fake_run)
    rows = case_latency.measure_monai("/d/pat3", True, 128, "/tmp/out", 60.0, plan={"spatial_dims": 3},
                                      network={"norm": "batch"})
    assert seen["cmd"][1:3] == ["-m", "benchmarks.monai_case_worker"] and seen["cache"] == "0"
    spec = json.loads(seen["cmd"][3])
    assert spec["inputs"] == ["/d/pat3", "/d/pat3"] and spec["tta"] and spec["network"] == {"norm": "batch"}
    assert [r["state"] for r in rows] == ["cold", "warm_same_process"]
    assert rows[0]["total_s"] == pytest.approx(20.0 - 3.5) and rows[1]["total_s"] == pytest.approx(3.5)
    assert rows[0]["case"] == "pat3" and rows[1]["tta"] is True and rows[1]["predict_s"] == 3.0


def test_nnunet_files_follow_the_models_channel_order(tmp_path, monkeypatch):
    case = _brats_case(tmp_path / "pat3")
    model = _nnunet_model(tmp_path / "nn", ("T1c", "FLAIR"))
    files = case_latency.nnunet_case_files(str(case), str(model))
    assert [os.path.basename(f) for f in files] == ["VSD.Brain.XX.O.MR_T1c.nii.gz", "VSD.Brain.XX.O.MR_Flair.nii.gz"]
    seen = {}
    monkeypatch.setattr(case_latency, "_run", lambda cmd, cache, timeout: (seen.update(spec=json.loads(cmd[3])) or (
        9.0, frameworks.RESULT_PREFIX + json.dumps({"cases": [{"read_s": 1, "predict_s": 1, "write_s": 1}] * 2}))))
    rows = case_latency.measure_nnunet(str(case), False, str(model), 2, str(tmp_path), 60.0)
    assert seen["spec"]["cases"] == [files, files] and seen["spec"]["fold"] == 2
    assert [r["total_s"] for r in rows] == [6.0, 3.0]
    with pytest.raises(ValueError, match="one file for nnU-Net channel 'T2'"):
        case_latency.nnunet_case_files(str(case), str(_nnunet_model(tmp_path / "nn2", ("FLAIR", "T2"))))


def test_bad_arguments_fail_in_one_line_before_any_run(tmp_path, capsys):
    _brats_case(tmp_path / "brats" / "pat3")
    brats = f"--brats_dir={tmp_path / 'brats'}"
    assert case_latency.main([brats]) == 2
    assert "--brats3d_model" in capsys.readouterr().err
    assert case_latency.main(["--brats3d_model=no-such-model", brats]) == 2
    assert "unknown model 'no-such-model'" in capsys.readouterr().err
    assert case_latency.main(["--brats3d_model=unet-phantoms-brain2d", brats, f"--nnunet_model={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --nnunet_model {tmp_path}: no dataset.json") and "\n" not in err
    model = _nnunet_model(tmp_path / "nn", ("FLAIR", "T2"))
    assert case_latency.main(["--brats3d_model=unet-phantoms-brain2d", brats, f"--nnunet_model={model}"]) == 2
    assert "expected one file for nnU-Net channel 'T2'" in capsys.readouterr().err


def test_nnunet_worker_names_a_missing_model_in_one_line(tmp_path):
    spec = {"model": str(tmp_path), "fold": 1, "cases": [[__file__]], "output_dir": str(tmp_path), "tta": False}
    r = subprocess.run([sys.executable, "-m", "benchmarks.nnunet_case_worker", json.dumps(spec)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip() == (f"error: model {tmp_path}: plans.json is missing (a trained nnU-Net model folder "
                                f"holds plans.json, dataset.json and fold_1/checkpoint_final.pth)")


@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("torch", "monai")),
                    reason="PyTorch + MONAI are not installed (the compare extra)")
def test_monai_worker_runs_the_planned_3d_path_on_a_tiny_volume(tmp_path):
    rng = np.random.default_rng(0)
    case = tmp_path / "pat1"
    case.mkdir()
    brain = np.zeros((20, 22, 18), bool)
    brain[3:17, 4:19, 2:15] = True  # the crop box: 14 x 15 x 13
    for name in ("VSD_Flair.nii.gz", "VSD_T1c.nii.gz"):
        vol = np.where(brain, rng.normal(size=brain.shape), -10.0).astype(np.float32)
        nib.save(nib.Nifti1Image(vol, np.diag([1.0, 1.0, 1.0, 1.0])), str(case / name))
    plan = {"spatial_dims": 3, "spacing": [1.0, 1.0, 1.0], "patch_size": [8, 8, 8],
            "preprocessing": {"crop": "nonzero"}}
    spec = {"inputs": [str(case), str(case)], "output_dir": str(tmp_path), "tta": True, "plan": plan,
            "network": {"spatial_dims": 3, "in_channels": 2, "out_channels": 3, "channels": [4, 8], "strides": [2],
                        "num_res_units": 1, "norm": "batch"}}
    r = subprocess.run([sys.executable, "-m", "benchmarks.monai_case_worker", json.dumps(spec)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(r.stdout.splitlines()[-1][len(frameworks.RESULT_PREFIX):])["cases"]
    assert len(rows) == 2 and rows[0]["import_s"] > 0 and rows[1]["import_s"] == 0
    assert rows[0]["shape"] == [20, 22, 18, 2] and rows[0]["threads"] == os.cpu_count()
    labels = np.asarray(nib.load(str(tmp_path / "monai1.nii.gz")).dataobj)
    assert labels.shape == (20, 22, 18) and labels.max() <= 2
    assert not labels[~brain].any()  # outside the crop: background


def test_a_failed_peer_is_one_line_and_the_other_rows_stay(tmp_path, monkeypatch, capsys):
    _brats_case(tmp_path / "brats" / "pat3")
    model = _nnunet_model(tmp_path / "nn")
    zoo_row = {"case": "pat3", "tta": False, "total_s": 5.0, "import_s": 1.0, "load_s": 1.0, "read_s": 1.0,
               "predict_s": 1.0, "write_s": 1.0, "compile_s": 0.5, "programs_compiled": 1, "programs_loaded": 0}
    monkeypatch.setattr(case_latency, "measure", lambda *a: [dict(zoo_row, state="cold"),
                                                             dict(zoo_row, state="warm_new_process")])

    def killed(*a):
        raise ValueError("-m benchmarks.nnunet_case_worker failed with exit status -9: no output")

    monkeypatch.setattr(case_latency, "measure_nnunet", killed)
    out = tmp_path / "r.json"
    assert case_latency.main(["--brats3d_model=unet-phantoms-brain2d", f"--brats_dir={tmp_path / 'brats'}",
                              f"--nnunet_model={model}", "--tta=off", "--no_monai", f"--out={out}"]) == 0
    result = json.loads(out.read_text())
    assert [r["state"] for r in result["rows"]] == ["cold", "warm_new_process"]
    assert result["peers_failed"] == [{"model": "nnU-Net nn", "error": "-m benchmarks.nnunet_case_worker failed "
                                                                       "with exit status -9: no output"}]
    assert "nnU-Net nn: no rows (-m benchmarks.nnunet_case_worker failed" in capsys.readouterr().out


def test_zoo_rows_are_cold_warm_in_a_new_process_and_warm_in_the_same_process(monkeypatch, tmp_path):
    calls = []
    first = {"import_s": 2.0, "load_s": 1.0, "read_s": 0.5, "predict_s": 4.0, "write_s": 0.5, "compile_s": 1.0,
             "programs_compiled": 3, "programs_loaded": 0, "shape": [4, 4, 4, 2]}
    second = {"read_s": 0.25, "predict_s": 3.0, "write_s": 0.25, "compile_s": 0.0, "programs_compiled": 0,
              "programs_loaded": 0, "shape": [4, 4, 4, 2]}

    def fake_run(cmd, cache, timeout):
        calls.append(cmd[2:])
        if cmd[2] == "zoo.predict":
            return 11.0, "wrote"
        inputs = cmd[cmd.index("--input") + 1:cmd.index("--output")]
        result = dict(first, next=[second] * (len(inputs) - 1))
        return 12.0, frameworks.RESULT_PREFIX + json.dumps(result) + "\n"

    monkeypatch.setattr(case_latency, "_run", fake_run)
    rows = case_latency.measure("/m", "/d/pat3", True, str(tmp_path), 60.0)
    assert [r["state"] for r in rows] == ["cold", "warm_new_process", "warm_same_process"]
    workers = [c for c in calls if c[0] == "benchmarks.case_worker"]
    assert [c[c.index("--input") + 1:c.index("--output")] for c in workers] == [["/d/pat3", "/d/pat3"], ["/d/pat3"]]
    assert rows[0]["total_s"] == 11.0 and rows[0]["worker_total_s"] == pytest.approx(12.0 - 3.5)
    assert rows[1]["worker_total_s"] == 12.0 and rows[1]["predict_s"] == 4.0
    same = rows[2]
    assert same["total_s"] == pytest.approx(3.5) and same["import_s"] == same["load_s"] == 0.0
    assert same["predict_s"] == 3.0 and same["programs_compiled"] == 0 and same["tta"] is True
    table = case_latency.format_table({"host": {"cpu_model": "cpu", "cpus": 2}, "load": {"loadavg": [1.0]},
                                       "rows": [dict(r, model="m", entry_programs=False) for r in rows]})
    assert "warm: new process, filled cache" in table and "warm: same process, next case" in table


def test_case_worker_times_the_next_case_in_the_same_process(tmp_path):
    import nibabel as nib

    from data_pipelines import phantoms

    case = tmp_path / "case.nii.gz"
    image = phantoms.make_phantom(phantoms.PhantomConfig(kind="brain", shape=(16, 16, 9)), 0)["image"]
    nib.save(nib.Nifti1Image(image.astype(np.float32), np.eye(4)), str(case))
    env = dict(os.environ, MEDZOO_COMPILATION_CACHE="0")
    r = subprocess.run([sys.executable, "-m", "benchmarks.case_worker", "--model", "unet-phantoms-brain2d", "--input",
                        str(case), str(case), "--output", str(tmp_path / "l.nii.gz")],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(r.stdout.splitlines()[-1][len(frameworks.RESULT_PREFIX):])
    assert result["programs_compiled"] >= 1 and len(result["next"]) == 1
    nxt = result["next"][0]
    assert nxt["programs_compiled"] == 0 and nxt["shape"] == [16, 16, 9, 4] and nxt["predict_s"] > 0
