"""The two MoCo views of a batch, from a pretraining config (recipes live in :mod:`equinv.augment`)."""

from __future__ import annotations

from dataclasses import replace

import torch

from equinv import coords as C
from equinv.augment.recipes import ViewConfig, bird_moco, face_moco, make_view
from equinv.data.preprocess import FACE_CONTEXT

FACE_KINDS = {"celeba", "mtfl", "facepoint", "300w", "synthetic"}


def auto_recipe(specs: list[str]) -> str:
    """``face`` when every dataset is a face kind (or the synthetic faces), else ``bird``."""
    kinds = {s.split(":", 1)[0].strip().lower() for s in specs}
    return "face" if kinds and kinds <= FACE_KINDS else "bird"


class ViewMaker:
    """Makes ``(query, key)`` views of a uint8 canvas batch on its device."""

    def __init__(self, view: ViewConfig):
        self.view = view

    @property
    def context(self) -> float:
        """Canvas side / final side the data must be preprocessed with."""
        return self.view.canvas / self.view.final

    @classmethod
    def from_config(cls, cfg) -> ViewMaker:
        recipe = auto_recipe(cfg.data) if cfg.recipe == "auto" else cfg.recipe
        if recipe == "face":
            view = face_moco(canvas=int(round(cfg.size * FACE_CONTEXT)), final=cfg.size)
        elif recipe == "bird":
            view = bird_moco(canvas=cfg.size, final=cfg.size)
        else:
            raise ValueError(f"unknown recipe {recipe!r}")
        view = replace(view, tps=cfg.tps, hflip_p=0.5 if cfg.flip else 0.0, grayscale_p=cfg.grayscale)
        return cls(view)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        q = make_view(images, None, None, self.view, generator).images
        k = make_view(images, None, None, self.view, generator).images
        return q, k

    def tracked(self, images: torch.Tensor, generator: torch.Generator,
                side: int) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """The two views (the same random draws as :meth:`__call__`) and ``side × side`` points tracked
        through them: the centres of a regular grid over the input image, where each lands in the query
        view and in the key view ``(B, side², 2)`` (view pixels), and which land inside both ``(B, side²)``."""
        b, _, h, w = images.shape
        ys = C.rescale(torch.arange(side, dtype=torch.float32), h / side)
        xs = C.rescale(torch.arange(side, dtype=torch.float32), w / side)
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        grid = torch.stack((xx.reshape(-1), yy.reshape(-1)), -1).expand(b, -1, -1).to(images.device)
        q = make_view(images, grid, None, self.view, generator)
        k = make_view(images, grid, None, self.view, generator)
        final = self.view.final
        valid = q.visible & k.visible & C.inside(q.landmarks, final) & C.inside(k.landmarks, final)
        return q.images, k.images, (q.landmarks, k.landmarks, valid)
