"""Saving matplotlib figures the one way figures are published: a temporary sibling, then one rename."""
from __future__ import annotations

from pathlib import Path

from ..atomic import atomic_path


def save_figure(fig, out, dpi: int) -> None:
    """Write `fig` as PNG to `out` (never half a file), then close it."""
    import matplotlib.pyplot as plt

    with atomic_path(Path(out)) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
