"""InfoNCE over one positive key and a queue of negatives (MoCo v1; CL/NCE/NCEAverage.py:171-208).

For query ``q_i``, its positive key ``k_i`` and negatives ``n_j`` (the queue)::

    logits_i = [q_i·k_i, q_i·n_1, ..., q_i·n_K] / T
    loss     = mean_i  -log softmax(logits_i)[0]      (cross-entropy with label 0)

Computed in float32 with autocast disabled, whatever the dtype of the inputs (fp16 logits overflow at
T = 0.07 and give NaNs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def info_nce(q: Tensor, k: Tensor, queue: Tensor, temperature: float = 0.07) -> tuple[Tensor, Tensor]:
    """Return ``(loss, logits)``.

    Args:
        q: queries ``(N, D)``, usually L2-normalised.
        k: positive keys ``(N, D)``, no gradient expected.
        queue: negatives ``(K, D)``; not normalised here (the reference's queue starts un-normalised).
        temperature: T > 0.

    Returns:
        loss: scalar float32 tensor, mean over the N queries.
        logits: ``(N, 1 + K)`` float32, positive in column 0, already divided by T.

    Example::

        loss, logits = info_nce(q, k.detach(), queue.clone(), 0.07)
    """
    with torch.autocast(device_type=q.device.type, enabled=False):
        q, k, queue = q.float(), k.float(), queue.float()
        l_pos = (q * k).sum(dim=1, keepdim=True)
        l_neg = q @ queue.t()
        logits = torch.cat([l_pos, l_neg], dim=1) / temperature
        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        loss = F.cross_entropy(logits, labels)
    return loss, logits
