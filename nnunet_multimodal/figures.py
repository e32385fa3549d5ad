"""Every figure the plugin writes: built on matplotlib's ``Figure`` (no pyplot, so no global backend is switched
in the user's process), written atomically, and marked as ours in the PNG's metadata so that a command writing
to a path the user named can tell its own earlier output from the user's files."""

from __future__ import annotations

import os
from pathlib import Path

from matplotlib.figure import Figure

from nnunet_multimodal.atomic_files import atomic_path

WRITTEN_BY = "nnunet-multimodal"


def new_figure(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] | None = None, **subplots_kwargs):
    """(figure, axes) as ``pyplot.subplots`` returns them."""
    figure = Figure(figsize=figsize)
    return figure, figure.subplots(nrows, ncols, **subplots_kwargs)


def save_figure(figure: Figure, filename: str | os.PathLike, dpi: float | None = None) -> None:
    figure.tight_layout()
    with atomic_path(filename) as temporary:
        figure.savefig(temporary, dpi=dpi, metadata={"Software": WRITTEN_BY})


def written_by_us(filename: str | os.PathLike) -> bool:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(filename) as image:
            return image.info.get("Software") == WRITTEN_BY
    except (OSError, UnidentifiedImageError):
        return False


def refuse_foreign_figure(filename: str | os.PathLike) -> None:
    """Before any work: an existing file at ``filename`` that no figure of ours wrote is the user's."""
    if Path(filename).exists() and not written_by_us(filename):
        raise FileExistsError(f"{filename} exists and was not written by nnunet-mm; choose another output file "
                              f"(-o) or delete it")
