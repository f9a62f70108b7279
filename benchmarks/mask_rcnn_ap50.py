"""Train Mask R-CNN on instance phantoms and measure COCO AP / FROC on held-out phantoms.

``python -m benchmarks.mask_rcnn_ap50 --steps 300 --kind lung`` uses the recipe in
``zoo/configs/mask_rcnn_phantoms.py`` (same model kwargs, optimiser and task loss as
``python -m zoo.train --config=mask_rcnn_phantoms``) in a plain jitted loop, then scores the
validation phantoms with :mod:`eval.instance_metrics`. Prints one JSON line per evaluation.
"""

from __future__ import annotations

import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from data_pipelines.phantoms import PhantomConfig, PhantomSource
from scoring import instance_metrics
from zoo.configs import load_config
from zoo.cli import command_parser, run_command
from zoo.registry import create_model
from zoo.tasks import get_task


def evaluate(model, params, val, batch_size):
    fwd = jax.jit(lambda p, x: model.apply({"params": p}, x))
    preds, targets = [], []
    for s in range(0, len(val["image"]), batch_size):
        out = jax.device_get(fwd(params, val["image"][s:s + batch_size]))
        for i in range(len(out["scores"])):
            preds.append({k: out[k][i] for k in ("masks", "scores", "classes", "valid")})
            targets.append({"instances": val["instances"][s + i], "label": val["label"][s + i]})
    return instance_metrics(preds, targets)


def main(argv=None) -> int:
    p = command_parser("python -m benchmarks.mask_rcnn_ap50", __doc__)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--kind", default="lung")
    p.add_argument("--eval_every", type=int, default=100)
    p.add_argument("--num_train", type=int, default=256)
    p.add_argument("--num_val", type=int, default=32)
    p.add_argument("--lr", type=float, default=None)
    return run_command(p, argv, _run)


def _run(a) -> None:
    c = load_config("mask_rcnn_phantoms")
    size = tuple(c.data.image_size)
    train = PhantomSource(PhantomConfig(kind=a.kind, shape=size, seed=0), a.num_train).arrays()
    val = PhantomSource(PhantomConfig(kind=a.kind, shape=size, seed=0), a.num_val, offset=100_000).arrays()
    k = 2
    model = create_model("mask_rcnn", in_channels=train["image"].shape[-1], num_classes=k,
                         **c.model.kwargs.to_dict())
    task = get_task("instance")
    bs = int(c.train.batch_size)
    lr = a.lr or float(c.train.learning_rate)
    sched = optax.warmup_cosine_decay_schedule(0.0, lr, int(c.train.warmup_steps), a.steps)
    tx = optax.chain(optax.clip_by_global_norm(float(c.train.grad_clip)), optax.adam(sched))
    params = jax.jit(lambda x: model.init({"params": jax.random.key(0)}, x))(train["image"][:bs])["params"]
    opt = tx.init(params)

    @jax.jit
    def step(params, opt, batch, key):
        (loss, (_, terms)), g = jax.value_and_grad(
            lambda q: task.loss(model, {"params": q}, batch, key, True), has_aux=True)(params)
        u, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, u), opt, terms

    rng = np.random.default_rng(0)
    t0 = time.time()
    for i in range(a.steps):
        idx = rng.choice(len(train["image"]), bs, replace=False)
        batch = {f: jnp.asarray(train[f][idx]) for f in ("image", "label", "instances")}
        params, opt, terms = step(params, opt, batch, jax.random.key(i))
        if (i + 1) % 25 == 0:
            print(json.dumps({"step": i + 1, "elapsed_s": round(time.time() - t0, 1),
                              **{k2: round(float(v), 4) for k2, v in terms.items()}}), flush=True)
        if (i + 1) % a.eval_every == 0 or i + 1 == a.steps:
            m = evaluate(model, params, val, bs)
            print(json.dumps({"step": i + 1, "kind": a.kind, "split": "val", "num_val": a.num_val, **m}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
