"""Figures for report pages: small enough that a page with several plots stays light."""

from __future__ import annotations

import io
from typing import Any

COLOURS = 64  # a 64-colour palette: a third of a full-colour PNG's size, no visible loss on a chart


def show(fig: Any) -> None:
    """Display a matplotlib figure as a compact PNG (64 colours), then close it: a figure left open would be
    displayed a second time at the end of the cell."""
    import matplotlib.pyplot as plt
    from IPython.display import Image, display
    from PIL import Image as PILImage

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight", facecolor="white")
    plt.close(fig)
    compact = io.BytesIO()
    PILImage.open(buffer).convert("RGB").quantize(colors=COLOURS).save(compact, format="png", optimize=True)
    display(Image(compact.getvalue()))
