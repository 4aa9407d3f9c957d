"""Landmark models for users: fit one on labelled images, save it, load it, predict on any image.

* :mod:`equinv.landmarks.model` — :class:`LandmarkModel`: a feature source + a keypoint regressor, saved as
  ``model.safetensors`` + ``model.json`` (no code runs when loading) and applied to images;
* :mod:`equinv.landmarks.framing` — how an input image becomes the model's view, and back;
* :mod:`equinv.landmarks.fit` — ``equinv fit``: train the regressor on a labelled spec (the evaluation's
  training code, with defaults chosen for short runs);
* :mod:`equinv.landmarks.inputs` and :mod:`equinv.landmarks.predict` — ``equinv predict``: images, folders and
  specs in, JSON / CSV out, streamed.
"""
