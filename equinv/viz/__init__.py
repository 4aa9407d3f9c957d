"""Visual checks: contact sheets of samples and augmented batches with their landmarks."""

from equinv.viz.contact_sheet import PALETTE, contact_sheet, draw_batch, landmark_colour

__all__ = ["PALETTE", "contact_sheet", "draw_batch", "landmark_colour"]
