"""Projection heads that map pooled backbone features ``(B, C)`` to embeddings ``(B, dim)``.

The paper (and its reference code, ``CL/models/resnet.py``) uses MoCo-v1's single linear layer to a
128-d space; MoCo-v2's two-layer MLP is offered as an option (the paper found no gain from it, P:135).
Neither head normalises: :class:`equinv.models.Encoder` L2-normalises after the head.
"""

from __future__ import annotations

from torch import Tensor, nn


class LinearHead(nn.Module):
    """``(B, in_dim) -> (B, out_dim)`` with one ``nn.Linear`` (PyTorch default init), as in MoCo v1."""

    def __init__(self, in_dim: int, out_dim: int = 128):
        super().__init__()
        self.fc = nn.Linear(in_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x)


class MLPHead(nn.Module):
    """MoCo-v2 head: ``Linear(in_dim, hidden) -> ReLU -> Linear(hidden, out_dim)``, hidden = in_dim."""

    def __init__(self, in_dim: int, out_dim: int = 128, hidden_dim: int | None = None):
        super().__init__()
        hidden_dim = hidden_dim or in_dim
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.relu(self.fc1(x)))


HEADS: dict[str, type[nn.Module]] = {"linear": LinearHead, "mlp": MLPHead}


def build_head(kind: str, in_dim: int, out_dim: int = 128) -> nn.Module:
    """Build the head named ``kind`` (``"linear"`` or ``"mlp"``)."""
    if kind not in HEADS:
        raise ValueError(f"unknown head {kind!r}; choose one of {sorted(HEADS)}")
    return HEADS[kind](in_dim, out_dim)
