"""Augmentations that move landmarks exactly as they move pixels.

- :mod:`equinv.augment.geometric`: random resized crop, flips, crops/slices, resize, affine.
- :mod:`equinv.augment.tps`: thin-plate-spline warps (reference ``Warper`` presets), dense maps, pairs.
- :mod:`equinv.augment.photometric`: colour jitter, PCA lighting, JPEG noise, grayscale, normalise.
- :mod:`equinv.augment.recipes`: the view chains (``face_moco``, ``bird_moco``) and :func:`two_views`.

Images ``(B, C, H, W)`` float in [0, 1]; landmarks ``(B, K, 2)`` pixel x, y (0-based, pixel centres at
integers; frames and conversions in :mod:`equinv.coords`); visible ``(B, K)`` bool. Random parameters come
from an explicit CPU ``torch.Generator``.
"""
