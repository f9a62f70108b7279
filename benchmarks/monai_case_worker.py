"""PyTorch + MONAI's side of ``benchmarks.case_latency``: one whole case through MONAI's ``sliding_window_inference``
in its own process, each phase timed.

    python -m benchmarks.monai_case_worker '{"input": CASE, "output": LABELS, "tta": false, "size": 128}'

The same work as the zoo's no-plan 2D path: the picture, or each axial slice of the volume, resized to ``size``²,
Gaussian-weighted windows of ``size``² (overlap 0.5, 4 windows a batch), with ``tta`` averaged over the three
mirrorings of the two axes, resized back, argmax, written (PNG or NIfTI). The network is MONAI's ``UNet(channels=(16,
32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2, norm="batch")`` with random weights (the timing, not the
answer, is compared), float32, PyTorch's own thread count. Prints ``RESULT {json}`` with ``import_s``, ``load_s``
(build the network), ``read_s``, ``predict_s``, ``write_s``. Like ``benchmarks.framework_worker`` it does not go
through ``zoo.cli``: that would import JAX into PyTorch's process.
"""

from __future__ import annotations

import time

T0 = time.perf_counter()

import glob  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

from benchmarks import frameworks  # noqa: E402


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if len(argv) != 1:
            raise ValueError("usage: python -m benchmarks.monai_case_worker SPEC_JSON")
        spec = json.loads(argv[0])
        frameworks.refuse_mixed("monai")
        out = _run(spec["input"], spec["output"], bool(spec["tta"]), int(spec["size"]))
        frameworks.refuse_mixed("monai")
    except (ValueError, KeyError, TypeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(frameworks.RESULT_PREFIX + json.dumps(out), flush=True)
    return 0


def _run(case: str, output: str, tta: bool, size: int) -> dict:
    import nibabel as nib
    import numpy as np
    import torch
    import torch.nn.functional as F
    from monai.inferers import sliding_window_inference
    from monai.networks.nets import UNet
    from PIL import Image

    t = {"import_s": time.perf_counter() - T0}
    t0 = time.perf_counter()
    picture = case.lower().endswith((".png", ".jpg", ".jpeg"))
    channels = 3 if picture else len(_modalities(case))
    net = UNet(spatial_dims=2, in_channels=channels, out_channels=2, channels=(16, 32, 64, 128, 256),
               strides=(2, 2, 2, 2), num_res_units=2, norm="batch").eval()
    t["load_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if picture:
        image = np.asarray(Image.open(case).convert("RGB"), np.float32)[None] / 255.0  # [1, H, W, 3]
        affine = None
    else:
        vols = [nib.load(f) for f in _modalities(case)]
        affine = vols[0].affine
        image = np.moveaxis(np.stack([np.asarray(v.dataobj, np.float32) for v in vols], -1), 2, 0)  # [Z, H, W, C]
    t["read_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(image, -1, 1)))
    grid = x.shape[2:]
    small = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    flips = [(2,), (3,), (2, 3)] if tta else []

    def windows(v):
        return torch.softmax(sliding_window_inference(v, (size, size), 4, net, overlap=0.5, mode="gaussian"), 1)

    with torch.inference_mode():
        proba = [windows(small[i:i + 8]) + sum(torch.flip(windows(torch.flip(small[i:i + 8], a)), a) for a in flips)
                 for i in range(0, len(small), 8)]
        proba = F.interpolate(torch.cat(proba), size=tuple(grid), mode="bilinear", align_corners=False)
        labels = proba.argmax(1).numpy().astype(np.uint8)
    t["predict_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if picture:
        Image.fromarray(labels[0] * 255).save(output)
    else:
        nib.save(nib.Nifti1Image(np.moveaxis(labels, 0, 2), affine), output)
    t["write_s"] = time.perf_counter() - t0
    t.update(compile_s=0.0, programs_compiled=0, programs_loaded=0, inside_s=time.perf_counter() - T0,
             shape=list(image.shape), threads=torch.get_num_threads())
    return t


def _modalities(folder: str) -> list[str]:
    """A BraTS case folder's image files (FLAIR, T1c, ...: not the label map or the brain mask)."""
    files = sorted(f for f in glob.glob(os.path.join(folder, "*.nii*"))
                   if not os.path.basename(f).startswith(("OT", "brainmask", "seg")))
    if not files:
        raise ValueError(f"{folder} holds no modality image")
    return files


if __name__ == "__main__":
    sys.exit(main())
