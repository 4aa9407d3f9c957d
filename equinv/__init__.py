"""equinv: equivariant and invariant learning of object landmark representations.

Use a fitted landmark model from Python::

    import equinv
    model = equinv.load("models/faces")            # a directory written by `equinv fit`
    points = model.predict(["a.jpg", "b.png"])     # (N, K, 2), pixels of each image
"""

from equinv.version import __version__

__all__ = ["__version__", "load"]


def load(model_dir, device="cpu"):
    """The landmark model ``equinv fit`` saved in ``model_dir`` (a :class:`~equinv.landmarks.model.LandmarkModel`)."""
    from equinv.landmarks.model import load_model

    return load_model(model_dir, device)
