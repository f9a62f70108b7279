"""The PDF summary of a segmentation result (matplotlib, no pyplot state: safe in the worker threads)."""

from __future__ import annotations

import textwrap

import numpy as np

from data_pipelines.atomic import atomic_path

__all__ = ["card_lines", "summary_pdf"]


def card_lines(fields: list[dict], width: int = 100) -> list[str]:
    """The model card's readable fields (``zoo.app.services.served.card_fields``: ``[{"label", "value"}]``) as
    ``label: value`` lines of at most ``width`` characters."""
    lines = []
    for f in fields:
        lines += textwrap.wrap(f"{f['label']}: {f['value']}", width, subsequent_indent="    ") or [f"{f['label']}:"]
    return lines


def summary_pdf(path: str, summary: dict, overlay_png: str, fields: list[dict]) -> None:
    """A one-page (two when the card is long) PDF of a segmentation result: the overlay, the volume (mL) or
    area (mm²) and Dice per class, the input geometry and the model card as its readable ``fields``
    (``zoo.app.services.served.card_fields``: intended use, data, licence, metrics...). Written with matplotlib's
    ``PdfPages`` on an object-oriented ``Figure`` (no pyplot state, safe in the worker threads), atomically
    (``data_pipelines.atomic``)."""
    from matplotlib.backends.backend_pdf import PdfPages
    from matplotlib.figure import Figure
    from PIL import Image

    unit = "volume (mL)" if summary["unit"] == "mL" else "area (mm²)"
    rows = [[name, f"{size:.3f}", "-" if summary["dice"] is None else
             ("n/a" if summary["dice"].get(name) is None else f"{summary['dice'][name]:.3f}")]
            for name, size in summary["sizes"].items()]
    lines = card_lines(fields)
    title = f"medzoo segmentation summary: {summary['model']}"
    with atomic_path(path) as tmp, PdfPages(tmp, metadata={"Title": title, "Subject": f"model {summary['model']}",
                                                           "Creator": "medzoo zoo.serve"}) as pdf:
        fig = Figure(figsize=(8.27, 11.69))  # A4
        fig.text(0.06, 0.965, title, fontsize=14, weight="bold")
        fig.text(0.06, 0.945, f"image shape {summary['shape']}, spacing {summary['spacing_mm']} mm, "
                              f"test-time augmentation: {'yes' if summary['tta'] else 'no'}", fontsize=9)
        ax = fig.add_axes((0.06, 0.48, 0.5, 0.45))
        with Image.open(overlay_png) as im:
            ax.imshow(np.asarray(im.convert("RGB")))
        ax.set_axis_off()
        ax.set_title("overlay (slice with the most foreground)", fontsize=9)
        tab = fig.add_axes((0.6, 0.6, 0.36, 0.3))
        tab.set_axis_off()
        table = tab.table(cellText=rows or [["-", "-", "-"]], colLabels=["class", unit, "Dice"], loc="upper center")
        table.auto_set_font_size(False)
        table.set_fontsize(8)
        if summary["dice"] is None:
            tab.text(0, 0, "Dice: no reference mask was given", fontsize=8, transform=tab.transAxes)
        fig.text(0.06, 0.45, "Model card", fontsize=11, weight="bold")
        per_page = 40
        fig.text(0.06, 0.44, "\n".join(lines[:per_page]), fontsize=7, va="top", family="monospace")
        fig.text(0.06, 0.02, "Research software: not a medical device; check every result.", fontsize=7)
        pdf.savefig(fig)
        for start in range(per_page, len(lines), 100):
            more = Figure(figsize=(8.27, 11.69))
            more.text(0.06, 0.97, "\n".join(lines[start:start + 100]), fontsize=7, va="top", family="monospace")
            pdf.savefig(more)
