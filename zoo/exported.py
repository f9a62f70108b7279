"""Exported models inside medzoo: the loaders of ``zoo.export_runtime`` under the names the application uses.

``zoo.export_runtime`` is the one runtime of exported folders (jax + numpy + the standard library, copied into
every export so it runs where medzoo is not installed); ``zoo.serve`` loads a bare network export through
:class:`ExportedModel` like a store entry. See ``zoo.export_runtime`` for both folder layouts.
"""

from __future__ import annotations

from zoo.export_runtime import ARTIFACT, MANIFEST, ExportedModel, blend_windows, is_exported

__all__ = ["MANIFEST", "ARTIFACT", "is_exported", "ExportedModel", "blend_windows"]
