"""Input-pipeline throughput (samples/s) against the smoke train step's consumption.

    python -m benchmarks.loader [--data_dir ../shared/data/brats] [--workers 0 2] [--seconds 3]

Measures, in one process and one run (so ratios are comparable):
  * ``TrainBatches``: the trainer's own batches (zoo.training.data: ``make_batch_dataset`` over the in-memory
    arrays, placed on the devices),
  * ``data_pipelines.loader.make_batch_dataset`` over the same arrays (``ArraysSource``: whole batches gathered
    with one index), on the host,
  * ``make_batch_dataset`` over an array_record TFDS ``data_source`` (phantoms builder, decoded per record),
  * the smoke U-Net train step (batch 8, the data's image size and channels): samples/s it consumes.
The two host pipelines run per ``--workers`` count (0: batches made as they are asked for, as the trainer
reads them; N: N grain read threads prefetching). Each loader is timed for ``--seconds`` after one warm-up
batch; the train step with ``benchmarks.common.time_calls``. The last line is a JSON summary with every ratio to
the train step.
"""

from __future__ import annotations

import json
import os
import tempfile
import time


def _rate(next_batch, batch_size: int, seconds: float) -> float:
    next_batch()  # warm-up (thread start, first decode)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        next_batch()
        n += 1
    return n * batch_size / (time.perf_counter() - t0)


def _batches(dataset, workers: int):
    """An iterator over a ``make_batch_dataset``: batches made in this thread (``workers=0``, as the trainer
    reads them) or by that many grain read threads ahead of it."""
    import grain.python as grain

    return iter(dataset.to_iter_dataset(grain.ReadOptions(num_threads=workers, prefetch_buffer_size=max(workers, 1))))


def main(argv=None) -> int:
    from zoo.cli import command_parser, run_command  # after __main__ has chosen the CPU platform

    p = command_parser("python -m benchmarks.loader", __doc__)
    p.add_argument("--data_dir", default="", help="BraTS folder (default: brain phantoms)")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--workers", type=int, nargs="*", default=[0],
                   help="grain read threads for the host pipelines (0: none; several: one run each)")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--no_train", action="store_true", help="skip the train-step measurement")
    return run_command(p, argv, _run)


def _run(args) -> int:
    import jax

    from data_pipelines import loader
    from data_pipelines.datasets import load_dataset
    from data_pipelines.tfds_builders import PhantomsConfig, load, prepare
    from zoo.configs import smoke
    from zoo.build import build_model
    from zoo.sharding import batch_sharding, make_mesh
    from zoo.training.data import TrainBatches

    cfg = smoke.get_config()
    if args.data_dir:
        cfg.data.name, cfg.data.data_dir = "brats", args.data_dir
    t0 = time.perf_counter()
    train, _, info = load_dataset(cfg.data)
    load_s = time.perf_counter() - t0
    bs = args.batch_size
    results = {"dataset": info.name, "num_train": int(len(train["image"])), "image_shape": list(train["image"].shape[1:]),
               "batch_size": bs, "load_dataset_s": round(load_s, 2), "backend": jax.default_backend()}

    trainer = TrainBatches(loader.ArraysSource(train), bs, 0, batch_sharding(make_mesh((-1, 1), batch_size=bs)))
    results["trainer_batches_samples_s"] = _rate(trainer.next, bs, args.seconds)
    arrays_src = loader.ArraysSource(train)
    for w in args.workers:
        it = _batches(loader.make_batch_dataset(arrays_src, bs, seed=0), w)
        results[f"grain_arrays_w{w}_samples_s"] = _rate(lambda: next(it), bs, args.seconds)

    with tempfile.TemporaryDirectory() as tmp:
        size = tuple(int(s) for s in cfg.data.image_size)
        b = prepare("phantoms", tmp, config=PhantomsConfig(name="bench", shape=size, num_train=64, num_val=8))
        src = load(b, "train")
        for w in args.workers:
            it = _batches(loader.make_batch_dataset(src, bs, seed=0), w)
            results[f"grain_array_record_w{w}_samples_s"] = _rate(lambda: next(it), bs, args.seconds)

    if not args.no_train:
        from benchmarks.common import build_jax_steps, time_calls
        model = build_model(cfg, info)
        batch = loader.gather(loader.ArraysSource(train), loader.batch_indices(len(train["image"]), 0, bs, 0),
                              ("image", "label"))
        steps = build_jax_steps(model, "segmentation", batch, loss=cfg.train.loss)
        timing = time_calls(steps.train, warmup=2, repeats=5, number=3)
        results["train_step_s"] = timing["median_s"]
        results["train_samples_s"] = bs / timing["median_s"]
        for k in [k for k in results if k.endswith("_samples_s") and k != "train_samples_s"]:
            results[k.replace("_samples_s", "_over_train")] = round(results[k] / results["train_samples_s"], 1)
    for k, v in list(results.items()):
        if isinstance(v, float):
            results[k] = round(v, 3) if v < 100 else round(v, 1)
        print(f"{k}: {results[k]}")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    raise SystemExit(main())
