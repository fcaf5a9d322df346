"""A text classifier as a function of its token embeddings, laid out as an image: [N, D, 1, L].

Gradients of a text model are taken with respect to the token embeddings, not the ids (ids are not
differentiable). Laying the L embeddings of dimension D out as a 1×L "image" with D channels lets every
image method that makes sense on text (gradients, integrated gradients, SmoothGrad, occlusion, the surrogates)
run unchanged, with the same batching, progress and cancel; each token's one score is then a reduction over its
D values (``explainers.text.render.token_scores``).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import SaliencyError
from ..hooks import adopt_modules
from ..registry import TEXT


def as_sequence(inputs: torch.Tensor) -> torch.Tensor:
    """[N, D, 1, L] → [N, L, D], the layout a transformer's ``inputs_embeds`` takes."""
    return inputs[:, :, 0, :].transpose(1, 2)


def as_strip(embeddings: torch.Tensor) -> torch.Tensor:
    """[N, L, D] → [N, D, 1, L], the layout the methods take."""
    return embeddings.transpose(1, 2).unsqueeze(2).contiguous()


class EmbeddingScores(nn.Module):
    """Logits [N, K] of a Hugging Face sequence classifier ``net`` for token embeddings [N, D, 1, L].

    Every row is read whole (no padding, attention to every token): one text, or copies of it, per call. The
    net's children are this module's children under their own names (``bert.encoder.layer.1``), so a layer named
    on the classifier is the same layer here, and the sanity cascade randomises the net's own weights; the net is
    held, not registered, and shares its lock with this module (``explainers.hooks.adopt_modules``,
    ``lock_for``).
    """

    modality = TEXT

    def __init__(self, net: nn.Module):
        super().__init__()
        adopt_modules(self, net)
        self.training = net.training  # a new module starts in training mode; this one follows the net

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if inputs.dim() != 4 or inputs.shape[2] != 1:
            raise SaliencyError(f"expected token embeddings laid out as [N, D, 1, L]; got {list(inputs.shape)}")
        self.net.training = self.training  # the children follow this module's train/eval switch; the net too
        output = self.net(inputs_embeds=as_sequence(inputs))
        return output.logits if hasattr(output, "logits") else output
