"""nnU-Net v2's side of ``benchmarks.case_latency``: whole cases through ``nnUNetPredictor`` in its own process,
each phase timed.

    python -m benchmarks.nnunet_case_worker '{"model": FOLDER, "fold": 0, "cases": [[FILE, ...], ...],
        "output_dir": DIR, "tta": false}'

``model``: a trained nnU-Net model folder (``<Trainer>__<Plans>__<configuration>``, holding ``plans.json``,
``dataset.json`` and ``fold_<fold>/checkpoint_final.pth``; e.g. the one ``python -m eval.studies.compare_nnunet
--configs 3d_fullres`` leaves in ``OUT/nnUNet_results``). ``cases``: each case's image files in the channel order of
the model's ``dataset.json``. The cases run one after the other in this process: the first is what a new user
waits for from process start (``import_s``: torch and nnU-Net; ``load_s``: the predictor and its checkpoint), the
ones after it what a user of a running predictor waits for. Each case is nnU-Net's own
``predict_from_files_sequential`` split into its three calls: ``read_s`` (``preprocessor.run_case``: read, crop,
normalise, resample), ``predict_s`` (``predict_logits_from_preprocessed_data``: Gaussian sliding window, with
``tta`` mirrored over every axis nnU-Net allows) and ``write_s`` (``export_prediction_from_logits``: resample back,
argmax, write). Tile step 0.5, Gaussian weighting, on the CPU, ``torch.set_num_threads(os.cpu_count())``.

The network is the one the plans describe, built by ``nnUNetTrainer.build_network_architecture`` whatever trainer
trained it (the head-to-head's budget trainer keeps nnU-Net's network; looking the trainer class up by name, as
``initialize_from_trained_model_folder`` does, imports every trainer variant, and some need torchvision
operators this environment's torchvision build lacks). Prints one line ``RESULT {json}``
(``{"cases": [row, ...]}``; the boundary is ``benchmarks.torch_worker``: no JAX in this process).
"""

from __future__ import annotations

import time

T0 = time.perf_counter()

import os  # noqa: E402
import sys  # noqa: E402

from benchmarks import torch_worker  # noqa: E402

__all__ = ["main"]


def main(argv=None) -> int:
    return torch_worker.run("benchmarks.nnunet_case_worker", argv, lambda spec: _run(
        spec["model"], int(spec.get("fold", 0)), spec["cases"], spec["output_dir"], bool(spec["tta"])))


def _checkpoint(folder: str, fold: int) -> str:
    """The fold's final checkpoint of the model folder; ``FileNotFoundError`` naming what is missing."""
    ckpt_path = os.path.join(folder, f"fold_{fold}", "checkpoint_final.pth")
    for path in (os.path.join(folder, "plans.json"), os.path.join(folder, "dataset.json"), ckpt_path):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"model {folder}: {os.path.relpath(path, folder)} is missing (a trained nnU-Net "
                                    f"model folder holds plans.json, dataset.json and fold_{fold}/checkpoint_final.pth)")
    return ckpt_path


def _predictor(folder: str, fold: int, tta: bool):
    """nnU-Net's predictor for fold ``fold`` of the model folder (nnU-Net's ``initialize_from_trained_model_folder``
    steps, the network built by the base trainer: module docstring)."""
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    ckpt_path = _checkpoint(folder, fold)
    dataset_json = load_json(os.path.join(folder, "dataset.json"))
    plans = PlansManager(load_json(os.path.join(folder, "plans.json")))
    ckpt = torch.load(ckpt_path, map_location=torch.device("cpu"), weights_only=False)
    cm = plans.get_configuration(ckpt["init_args"]["configuration"])
    network = nnUNetTrainer.build_network_architecture(
        plans, cm, determine_num_input_channels(plans, cm, dataset_json),
        plans.get_label_manager(dataset_json).num_segmentation_heads, enable_deep_supervision=False)
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=tta,
                                perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
    predictor.manual_initialization(network, plans, cm, [ckpt["network_weights"]], dataset_json, ckpt["trainer_name"],
                                    ckpt.get("inference_allowed_mirroring_axes"))
    return predictor


def _run(folder: str, fold: int, cases: list, output_dir: str, tta: bool) -> dict:
    if not cases or not all(isinstance(c, list) and c for c in cases):
        raise ValueError("cases: expected a non-empty list of each case's image files")
    missing = [f for c in cases for f in c if not os.path.isfile(f)]
    if missing:
        raise FileNotFoundError(f"cases: no such file {missing[0]}")
    _checkpoint(folder, fold)  # before the imports: a wrong folder fails in a moment
    import contextlib
    import io

    import torch
    from nnunetv2.inference.export_prediction import export_prediction_from_logits

    torch.set_num_threads(os.cpu_count() or 1)
    first = {"import_s": time.perf_counter() - T0}
    t0 = time.perf_counter()
    predictor = _predictor(folder, fold, tta)
    first["load_s"] = time.perf_counter() - t0
    preprocessor = predictor.configuration_manager.preprocessor_class(verbose=False)
    rows = []
    for i, files in enumerate(cases):
        row = dict(first) if i == 0 else {"import_s": 0.0, "load_s": 0.0}
        t0 = time.perf_counter()
        data, _, props = preprocessor.run_case(files, None, predictor.plans_manager, predictor.configuration_manager,
                                               predictor.dataset_json)
        row["read_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # nnU-Net prints its progress
            logits = predictor.predict_logits_from_preprocessed_data(torch.from_numpy(data)).cpu()
        row["predict_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        export_prediction_from_logits(logits, props, predictor.configuration_manager, predictor.plans_manager,
                                      predictor.dataset_json, os.path.join(output_dir, f"nnunet{i}"), False)
        row["write_s"] = time.perf_counter() - t0
        row.update(compile_s=0.0, programs_compiled=0, programs_loaded=0, shape=list(props["shape_before_cropping"]),
                   preprocessed_shape=list(data.shape[1:]), patch=list(predictor.configuration_manager.patch_size),
                   threads=torch.get_num_threads(), inside_s=time.perf_counter() - T0)
        rows.append(row)
    return {"cases": rows}


if __name__ == "__main__":
    sys.exit(main())
