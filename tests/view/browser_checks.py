"""What the browser tests read from a page and what Python says it should show."""

from __future__ import annotations

import torch

from equinv.evaluate.transfer import transfer_landmarks
from equinv.view.correspondence import stored_descriptors
from equinv.view.page import read_data

# for every target card: its marker's data-cell and where the marker's centre is drawn within the image box
READ_MARKERS = """cards => cards.map(c => {
  const box = c.querySelector('.imgbox').getBoundingClientRect();
  const m = c.querySelector('.marker'), r = m.getBoundingClientRect();
  return {cell: m.dataset.cell, hidden: m.hidden, fx: (r.left + r.width / 2 - box.left) / box.width,
          fy: (r.top + r.height / 2 - box.top) / box.height};
})"""


def python_cells(out, source: str, point) -> list[tuple[int, int]]:
    """Grid cells of the nearest-neighbour match of ``point`` (96-frame) in every target, by
    :func:`equinv.evaluate.transfer.transfer_landmarks` on the page's stored descriptors."""
    desc = stored_descriptors(out, source)
    size, grid = read_data(out, "meta")["correspondence"]["image_size"], desc.shape[-1]
    pred = transfer_landmarks(desc[0], torch.tensor([point], dtype=torch.float32), desc[1:], image_size=size)[:, 0]
    cells = torch.round((pred + 0.5) * grid / size - 0.5).long()
    return [tuple(c) for c in cells.tolist()]


def page_cells(page, grid: int) -> list[tuple[int, int]]:
    """Cells of the target markers as drawn (from their positions) after checking they equal data-cell."""
    out = []
    for m in page.eval_on_selector_all("#targets .card", READ_MARKERS):
        assert not m["hidden"]
        drawn = (int(m["fx"] * grid), int(m["fy"] * grid))  # the marker sits at its cell's centre
        assert f"{drawn[0]},{drawn[1]}" == m["cell"], (drawn, m)
        out.append(drawn)
    return out


def use_source(page, name: str) -> None:
    page.select_option("#source", name)
    page.wait_for_function("n => document.getElementById('source-about').textContent.startsWith(n + ':')", arg=name)
