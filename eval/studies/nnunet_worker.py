"""nnU-Net v2's side of the head-to-head, run as a subprocess (torch never shares a process with jax).

``python -m eval.studies.nnunet_worker plan --dataset_id N --configs 2d[,3d_fullres]``: nnU-Net's own
fingerprint (with its dataset integrity check), experiment planning and preprocessing (its Python API:
``plan_and_preprocess_api``), one process each.

``python -m eval.studies.nnunet_worker train --dataset_id N --config 2d|3d_fullres --fold F --budget_s S
[--clock wall|cpu]``: trains fold ``F`` (``splits_final.json``) with ``nnUNetTrainerBudget`` on the CPU for ``S``
seconds of training on the clock (wall seconds, or this process's CPU seconds; nnU-Net's data loading and set-up
before the first iteration are not counted, as the zoo's clock starts after its first step), then reports its
iterations, epochs, wall and CPU seconds.

``python -m eval.studies.nnunet_worker predict --dataset_id N --config 2d --fold F --cases CASES.json --out DIR
[--mirroring]``: predicts each case (``[[case id, [image files]]]``) with nnU-Net's ``nnUNetPredictor`` from the
fold's final checkpoint, one case at a time, writes ``DIR/<case><ending>`` (nnU-Net's own writer) and reports
the seconds per case (the first case includes the predictor's warm-up).

The environment names nnU-Net's folders (``nnUNet_raw``, ``nnUNet_preprocessed``, ``nnUNet_results``), set by the
caller (``eval.studies.nnunet_study``). A command's result is its last stdout line, ``RESULT <json>``; the caller
records it (through ``data_pipelines.atomic``). This process imports torch, so it imports nothing of the project
(``data_pipelines`` and ``zoo`` import jax): its command line is plain argparse with the project's error
convention (``error: <message>`` on stderr, exit 2).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

import argparse

TRAINER = "nnUNetTrainerBudget"
PLANS = "nnUNetPlans"
DEFAULT_EPOCHS = 1000  # nnU-Net's default schedule: 1,000 epochs x 250 iterations


def _budget_trainer():
    """The trainer class (defined on first use: importing torch and nnunetv2 is the worker's business only)."""
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    class nnUNetTrainerBudget(nnUNetTrainer):
        """nnU-Net's default trainer (network, loss, augmentation, poly learning rate, the plan's patch and batch
        size for any configuration) sized to a budget on the CPU, on ``clock`` ``"wall"`` (seconds since the
        first iteration) or ``"cpu"`` (this process's CPU seconds since then, user + system of all its threads:
        ``time.process_time``; data augmentation runs in this process). Epochs of ``ITERATIONS`` iterations, fewer
        when the first iteration shows that the budget fits under ~10 epochs of them (3d_fullres on 2 cores);
        after every epoch the schedule's length (``num_epochs``, the poly learning rate's ``max_steps``)
        becomes the epochs the budget fits at the mean speed so far (rounded up, so the schedule never ends
        before the budget); training stops at the budget (checked every iteration; the clock pauses for the one
        validation iteration per epoch, as the zoo's evaluation is outside its clock) and saves the final
        checkpoint."""

        ITERATIONS = 10
        budget_s = 60.0
        clock = "wall"

        def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                     device: torch.device = torch.device("cpu")):
            super().__init__(plans, configuration, fold, dataset_json, device)
            self.num_iterations_per_epoch = self.ITERATIONS
            self.num_val_iterations_per_epoch = 1
            self.num_epochs = DEFAULT_EPOCHS
            self.iterations_done = 0
            self.trained_s = 0.0
            self.cpu_s = 0.0
            self.val_s, self.val_cpu_s = 0.0, 0.0
            self.stopped_by_time = False

        def run_training(self):
            self.on_train_start()
            w0, c0 = time.time(), time.process_time()

            def spent() -> float:  # the budget's clock: wall seconds, or this process's CPU seconds (all threads)
                return (time.process_time() - c0) if self.clock == "cpu" else (time.time() - w0)

            val_w, val_c = 0.0, 0.0

            while self.current_epoch < self.num_epochs and not self.stopped_by_time:
                self.on_epoch_start()
                self.on_train_epoch_start()
                outputs = []
                i = 0
                while i < self.num_iterations_per_epoch:
                    outputs.append(self.train_step(next(self.dataloader_train)))
                    self.iterations_done += 1
                    i += 1
                    if spent() >= self.budget_s:
                        self.stopped_by_time = True
                        break
                    if self.iterations_done == 1:
                        # slow iterations (3d_fullres: tens of seconds on 2 cores): shorter epochs, so the
                        # schedule still has several epochs within the budget (about 10 at the first one's speed)
                        fit = self.budget_s / max(spent(), 1e-3)
                        self.num_iterations_per_epoch = int(min(self.ITERATIONS, max(1, round(fit / 10))))
                self.on_train_epoch_end(outputs)
                v_w, v_c = time.time(), time.process_time()
                with torch.no_grad():
                    self.on_validation_epoch_start()
                    val = [self.validation_step(next(self.dataloader_val))
                           for _ in range(self.num_val_iterations_per_epoch)]
                    self.on_validation_epoch_end(val)
                # the clock pauses for validation (as the zoo's evaluation is outside its clock)
                dw, dc = time.time() - v_w, time.process_time() - v_c
                w0, c0, val_w, val_c = w0 + dw, c0 + dc, val_w + dw, val_c + dc
                self.on_epoch_end()
                if not self.stopped_by_time:
                    # size the schedule to the budget at the mean speed so far (rounded up: it never ends before
                    # the budget, which stops it)
                    per_epoch = max(spent() / self.current_epoch, 1e-3)
                    self.num_epochs = min(DEFAULT_EPOCHS, max(self.current_epoch + 1,
                                                              math.ceil(self.budget_s / per_epoch)))
                    self.lr_scheduler.max_steps = self.num_epochs
            self.trained_s = time.time() - w0
            self.cpu_s = time.process_time() - c0
            self.val_s, self.val_cpu_s = val_w, val_c
            self.on_train_end()

    return nnUNetTrainerBudget


def _dataset_name(dataset_id: int) -> str:
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    return maybe_convert_to_dataset_name(dataset_id)


def _model_folder(dataset_id: int, config: str) -> str:
    return os.path.join(os.environ["nnUNet_results"], _dataset_name(dataset_id), f"{TRAINER}__{PLANS}__{config}")


def _plan(args) -> int:
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (extract_fingerprints, plan_experiments,
                                                                      preprocess)

    configs = [c for c in args.configs.split(",") if c]
    extract_fingerprints([args.dataset_id], num_processes=args.processes, check_dataset_integrity=True,
                         clean=True, verbose=False, show_progress_bar=False)
    plan_experiments([args.dataset_id])
    preprocess([args.dataset_id], PLANS, configurations=configs, num_processes=[args.processes] * len(configs),
               verbose=False, show_progress_bar=False)
    return _result({"configs": configs})


def _result(record: dict) -> int:
    print("RESULT " + json.dumps(record), flush=True)
    return 0


def _train(args) -> int:
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json

    torch.set_num_threads(args.threads)
    pre = os.path.join(os.environ["nnUNet_preprocessed"], _dataset_name(args.dataset_id))
    trainer_class = _budget_trainer()
    trainer_class.budget_s = float(args.budget_s)
    trainer_class.clock = args.clock
    plans = load_json(os.path.join(pre, f"{PLANS}.json"))
    plans["continue_training"] = False  # as run_training.get_trainer_from_args sets it: a fresh fold
    trainer = trainer_class(plans, args.config, args.fold, load_json(os.path.join(pre, "dataset.json")),
                            device=torch.device("cpu"))
    trainer.run_training()
    record = {"iterations": trainer.iterations_done, "epochs": trainer.current_epoch,
              "iterations_per_epoch": trainer.num_iterations_per_epoch, "planned_epochs": trainer.num_epochs,
              "trained_s": round(trainer.trained_s, 2), "cpu_s": round(trainer.cpu_s, 2), "clock": args.clock,
              "validation_s": round(trainer.val_s, 2), "validation_cpu_s": round(trainer.val_cpu_s, 2),
              "budget_s": float(args.budget_s),
              "stopped_by_time": trainer.stopped_by_time, "batch_size": int(trainer.batch_size),
              "patch_size": [int(v) for v in trainer.configuration_manager.patch_size],
              "default_epochs": DEFAULT_EPOCHS, "default_iterations": DEFAULT_EPOCHS * 250, "threads": args.threads}
    return _result(record)


def _predictor(args):
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    torch.set_num_threads(args.threads)
    folder = _model_folder(args.dataset_id, args.config)
    ckpt_path = os.path.join(folder, f"fold_{args.fold}", "checkpoint_final.pth")
    if not os.path.isfile(ckpt_path):
        raise FileNotFoundError(f"{ckpt_path}: no trained model (run the train command first)")
    dataset_json = load_json(os.path.join(folder, "dataset.json"))
    plans = PlansManager(load_json(os.path.join(folder, "plans.json")))
    ckpt = torch.load(ckpt_path, map_location=torch.device("cpu"), weights_only=False)
    cm = plans.get_configuration(ckpt["init_args"]["configuration"])
    # The budget trainer keeps nnU-Net's network, so the stock builder restores it (nnU-Net's own
    # initialize_from_trained_model_folder looks trainer classes up inside the nnunetv2 package only).
    network = _budget_trainer().build_network_architecture(
        plans, cm, determine_num_input_channels(plans, cm, dataset_json),
        plans.get_label_manager(dataset_json).num_segmentation_heads, enable_deep_supervision=False)
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=args.mirroring,
                                perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
    predictor.manual_initialization(network, plans, cm, [ckpt["network_weights"]], dataset_json, TRAINER,
                                    ckpt.get("inference_allowed_mirroring_axes"))
    return predictor, dataset_json["file_ending"]


def _predict(args) -> int:
    with open(args.cases, encoding="utf-8") as fh:
        cases = json.load(fh)
    if not isinstance(cases, list) or not all(isinstance(c, list) and len(c) == 2 for c in cases):
        raise ValueError(f"--cases {args.cases}: expected a JSON list of [case id, [image files]]")
    predictor, ending = _predictor(args)
    os.makedirs(args.out, exist_ok=True)
    seconds = {}
    for case, files in cases:
        t0 = time.time()
        predictor.predict_from_files_sequential([list(files)], [os.path.join(args.out, case)],
                                                save_probabilities=False, overwrite=True)
        seconds[case] = round(time.time() - t0, 3)
        if not os.path.isfile(os.path.join(args.out, case + ending)):
            raise ValueError(f"nnU-Net wrote no prediction for case {case!r}")
    return _result({"seconds_per_case": seconds, "mirroring": args.mirroring, "threads": args.threads})


def _parser():
    p = argparse.ArgumentParser(prog="python -m eval.studies.nnunet_worker", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("plan", "train", "predict"):
        s = sub.add_parser(name)
        s.add_argument("--dataset_id", type=int, required=True)
        s.add_argument("--threads", type=int, default=os.cpu_count() or 1)
        if name == "plan":
            s.add_argument("--configs", default="2d")
            s.add_argument("--processes", type=int, default=1)
        else:
            s.add_argument("--config", default="2d")
            s.add_argument("--fold", type=int, required=True)
        if name == "train":
            s.add_argument("--budget_s", type=float, required=True)
            s.add_argument("--clock", choices=("wall", "cpu"), default="wall")
        if name == "predict":
            s.add_argument("--cases", required=True)
            s.add_argument("--out", required=True)
            s.add_argument("--mirroring", action="store_true")
    return p


def _body(args) -> int:
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        if not os.environ.get(var):
            raise ValueError(f"environment variable {var} is not set (the study sets it)")
    if getattr(args, "budget_s", 1.0) <= 0:
        raise ValueError(f"--budget_s must be > 0, got {args.budget_s}")
    return {"plan": _plan, "train": _train, "predict": _predict}[args.command](args)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _body(args)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
