"""Plan a data set from its fingerprint: ``python -m data_pipelines.planning --data_dir DIR --dataset NAME
[--out plan.json] [--modality MR|CT|RGB|other] [--spatial_dims 2|3] [--memory_budget VOXELS]
[--modalities FLAIR,T1c] [--denoise median|curvature_flow] [--n4] [--crop nonzero]``.

Reads every case of the data family ``NAME`` at full resolution (``DataFamily.read_cases``), prints its
fingerprint (:mod:`data_pipelines.fingerprint`) and the plan made from it (:mod:`data_pipelines.planner`; the
family's default modality unless ``--modality``) as JSON, and writes the plan to ``--out``. Training applies
the plan with :mod:`data_pipelines.preprocessing` (``data.plan=plan.json``). Bad input ends with one line
``error: ...`` and exit 2. The library lives in those three modules, as nnU-Net keeps them; this module is
only the command line.
"""

from __future__ import annotations

import sys

from data_pipelines.atomic import dumps
from data_pipelines.datasets import data_config
from data_pipelines.families import get_family, list_families
from data_pipelines.fingerprint import fingerprint
from data_pipelines.planner import make_plan
from zoo.cli import command_parser, run_command

__all__ = ["main"]


def main(argv=None) -> int:
    p = command_parser("python -m data_pipelines.planning", __doc__, out="write the plan here (JSON)",
                       out_default="")
    p.add_argument("--data_dir", required=True)
    p.add_argument("--dataset", required=True, choices=[f.name for f in list_families() if f.read_cases])
    p.add_argument("--modality", default="", help="MR | CT | RGB | other (default: the data set's)")
    p.add_argument("--spatial_dims", type=int, default=None)
    p.add_argument("--memory_budget", type=int, default=None, help="voxels of one batch")
    p.add_argument("--modalities", default=None, help="brats: channels, e.g. FLAIR,T1c")
    p.add_argument("--denoise", default=None, choices=["median", "curvature_flow"])
    p.add_argument("--n4", action="store_true")
    p.add_argument("--crop", default=None, choices=["nonzero"])
    return run_command(p, argv, _run)


def _run(args) -> int:
    cfg = data_config(args.dataset, args.data_dir, modalities=args.modalities)
    family = get_family(args.dataset)
    cases, names, _ = family.all_cases(cfg)
    fp = fingerprint((c["image"], c["label"], c["meta"]) for c in cases)
    modality = args.modality or family.default_modality(cfg)
    plan = make_plan(fp, modality=modality, spatial_dims=args.spatial_dims, memory_budget=args.memory_budget,
                     channel_names=names, denoise=args.denoise, n4=args.n4, crop=args.crop)
    summary = {k: v for k, v in fp.items() if k not in ("spacings", "shapes", "cropped_shapes")}
    print(dumps({"fingerprint": summary, "plan": plan.to_dict()}, indent=2))
    if args.out:
        plan.save(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
