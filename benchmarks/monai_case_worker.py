"""PyTorch + MONAI's side of ``benchmarks.case_latency``: whole cases through MONAI's ``sliding_window_inference``
in its own process, each phase timed.

    python -m benchmarks.monai_case_worker '{"inputs": [CASE, ...], "output_dir": DIR, "tta": false, "size": 128,
        "plan": null, "network": {}}'

The cases run one after the other in this process: the first is what a new user waits for from process start
(``import_s``: torch and MONAI; ``load_s``: building the network), the ones after it what a user of a running
process waits for. Per case ``read_s``, ``predict_s`` (preprocess, sliding window, restore, argmax) and ``write_s``.

* ``plan`` (a zoo run's plan, ``data_pipelines.planner.Plan.to_dict()``): the zoo's planned path done with numpy
  and PyTorch: crop to the box of the voxels where a channel differs from its minimum (with ``crop: nonzero``),
  each channel z-scored over those voxels (0 outside), resampled (trilinear) to the plan's spacing when the file's
  differs, Gaussian-weighted windows of the plan's ``patch_size`` (overlap 0.5, 4 windows a batch), with ``tta``
  averaged over every mirroring of the spatial axes (the input flipped, each copy its own sliding window, flipped
  back), resampled back, the crop undone (outside: class 0), argmax, written (NIfTI, the input's affine);
* no plan: the zoo's no-plan 2D path: the picture, or each axial slice of the volume, resized to ``size``², windows
  of ``size``², with ``tta`` the three mirrorings of the two axes, resized back, argmax, written (PNG or NIfTI).

The network is MONAI's ``UNet(spatial_dims, in_channels, out_channels, channels, strides, num_res_units, norm)``
(``network`` overrides: the zoo's ``residual_unet`` is that network layer for layer; default ``channels=(16, 32, 64,
128, 256), strides=(2, 2, 2, 2), num_res_units=2, norm="batch"``, two classes) with random weights (the timing,
not the answer, is compared), float32, ``torch.set_num_threads(os.cpu_count())``. Prints ``RESULT {json}``
(``{"cases": [row, ...]}``; the boundary is ``benchmarks.torch_worker``: no JAX in this process).
"""

from __future__ import annotations

import time

T0 = time.perf_counter()

import glob  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

from benchmarks import torch_worker  # noqa: E402


def main(argv=None) -> int:
    return torch_worker.run("benchmarks.monai_case_worker", argv, lambda spec: _run(
        list(spec["inputs"]), spec["output_dir"], bool(spec["tta"]), int(spec.get("size", 128)), spec.get("plan"),
        dict(spec.get("network") or {})))


def _run(cases: list, output_dir: str, tta: bool, size: int, plan: dict | None, network: dict) -> dict:
    import torch
    from monai.networks.nets import UNet

    if not cases:
        raise ValueError("inputs: no case given")
    torch.set_num_threads(os.cpu_count() or 1)
    first = {"import_s": time.perf_counter() - T0}
    t0 = time.perf_counter()
    picture = cases[0].lower().endswith((".png", ".jpg", ".jpeg"))
    dims = int(plan["spatial_dims"]) if plan else 2
    kw = dict(spatial_dims=dims, in_channels=3 if picture else len(_modalities(cases[0])), out_channels=2,
              channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2, norm="batch")
    kw.update(network)
    net = UNet(**kw).eval()
    first["load_s"] = time.perf_counter() - t0
    rows = []
    for i, case in enumerate(cases):
        row = dict(first) if i == 0 else {"import_s": 0.0, "load_s": 0.0}
        row.update(_case(net, case, os.path.join(output_dir, f"monai{i}"), tta, size, plan))
        row.update(compile_s=0.0, programs_compiled=0, programs_loaded=0, threads=torch.get_num_threads(),
                   inside_s=time.perf_counter() - T0)
        rows.append(row)
    return {"cases": rows}


def _case(net, case: str, output: str, tta: bool, size: int, plan: dict | None) -> dict:
    import nibabel as nib
    import numpy as np
    import torch
    from PIL import Image

    t = {}
    t0 = time.perf_counter()
    picture = case.lower().endswith((".png", ".jpg", ".jpeg"))
    if picture:
        image = np.asarray(Image.open(case).convert("RGB"), np.float32) / 255.0  # [H, W, 3]
        affine = spacing = None
    else:
        vols = [nib.load(f) for f in _modalities(case)]
        affine, spacing = vols[0].affine, vols[0].header.get_zooms()[:3]
        image = np.stack([np.asarray(v.dataobj, np.float32) for v in vols], -1)  # [H, W, D, C]
    t["read_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    with torch.inference_mode():
        if plan:
            labels = _planned(net, image, spacing, plan, tta)
        else:
            labels = _slices(net, image if picture else np.moveaxis(image, 2, 0), size, tta, picture)
    t["predict_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if picture:
        Image.fromarray(labels * 255).save(output + ".png")
    else:
        nib.save(nib.Nifti1Image(labels, affine), output + ".nii.gz")
    t["write_s"] = time.perf_counter() - t0
    t["shape"] = list(image.shape)
    return t


def _windows(net, x, roi, tta: bool):
    """Softmax of Gaussian-weighted sliding windows over ``x [B, C, *S]`` (4 windows a batch, overlap 0.5), with
    ``tta`` averaged over every mirroring of the spatial axes (each copy its own sliding window)."""
    import itertools

    import torch
    from monai.inferers import sliding_window_inference

    axes = list(range(2, x.ndim))
    flips = [c for r in range(1, len(axes) + 1) for c in itertools.combinations(axes, r)] if tta else []

    def proba(v):
        return torch.softmax(sliding_window_inference(v, roi, 4, net, overlap=0.5, mode="gaussian"), 1)

    return (proba(x) + sum(torch.flip(proba(torch.flip(x, a)), a) for a in flips)) / (1 + len(flips))


def _slices(net, image, size: int, tta: bool, picture: bool):
    """The no-plan 2D path: ``image [Z, H, W, C]`` (or a picture ``[H, W, C]``) -> labels in the input's layout."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(image[None] if picture else image, -1, 1)))
    grid = tuple(x.shape[2:])
    small = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    proba = torch.cat([_windows(net, small[i:i + 8], (size, size), tta) for i in range(0, len(small), 8)])
    labels = F.interpolate(proba, size=grid, mode="bilinear", align_corners=False).argmax(1).numpy().astype(np.uint8)
    return labels[0] if picture else np.moveaxis(labels, 0, 2)


def _planned(net, image, spacing, plan: dict, tta: bool):
    """The planned path (module docstring): ``image [*S, C]`` -> labels ``[*S]`` uint8."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    nd = image.ndim - 1
    mask = np.any(image != image.reshape(-1, image.shape[-1]).min(0), -1)
    if (plan.get("preprocessing") or {}).get("crop") == "nonzero" and mask.any():
        box = [np.flatnonzero(np.any(mask, tuple(b for b in range(nd) if b != a)))[[0, -1]] for a in range(nd)]
        box = tuple(slice(int(lo), int(hi) + 1) for lo, hi in box)
    else:
        box = tuple(slice(0, n) for n in image.shape[:nd])
    x, m = image[box], mask[box]
    chans = []
    for c in range(x.shape[-1]):
        v = x[..., c][m]
        mu, sd = (float(v.mean()), float(v.std())) if v.size > 1 else (0.0, 1.0)
        chans.append(np.where(m, (x[..., c] - mu) / max(sd, 1e-8), 0.0).astype(np.float32))
    t = torch.from_numpy(np.stack(chans, 0)[None])  # [1, C, *S']
    cropped = tuple(t.shape[2:])
    target = plan.get("spacing")
    shape_out = cropped if target is None else tuple(
        max(int(round(n * float(s) / float(g))), 1) for n, s, g in zip(cropped, spacing, target))
    if shape_out != cropped:
        t = F.interpolate(t, size=shape_out, mode="trilinear", align_corners=False)
    proba = _windows(net, t, tuple(int(p) for p in plan["patch_size"]), tta)
    if shape_out != cropped:
        proba = F.interpolate(proba, size=cropped, mode="trilinear", align_corners=False)
    labels = np.zeros(image.shape[:nd], np.uint8)
    labels[box] = proba[0].argmax(0).numpy().astype(np.uint8)
    return labels


def _modalities(folder: str) -> list[str]:
    """A BraTS case folder's image files (FLAIR, T1c, ...: not the label map or the brain mask)."""
    files = sorted(f for f in glob.glob(os.path.join(folder, "*.nii*"))
                   if not os.path.basename(f).startswith(("OT", "brainmask", "seg")))
    if not files:
        raise ValueError(f"{folder} holds no modality image")
    return files


if __name__ == "__main__":
    sys.exit(main())
