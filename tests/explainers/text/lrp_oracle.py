"""AttnLRP's rules on Hugging Face's BERT written out in gradient × input form, as the authors' lxt computes them
(Achtibat et al. 2024, arXiv:2402.05602): a test oracle independent of ``explainers.lrp``'s engine. lxt 2.1's own
BERT patch (``lxt.efficient.models.bert``) does not import under transformers 5 (it needs
``find_pruneable_heads_and_indices``, gone from ``transformers.pytorch_utils``), so the forward is written here."""

from __future__ import annotations

import torch
import torch.nn.functional as F


class _Identity(torch.autograd.Function):
    """y = fn(x); backward × y/x: in gradient × input form, the relevance passes whole (identity rule, eq. 9)."""

    @staticmethod
    def forward(ctx, x, fn):
        y = fn(x)
        ctx.save_for_backward(y / (x + 1e-12 * torch.where(x >= 0, 1.0, -1.0)))
        return y

    @staticmethod
    def backward(ctx, grad):
        (ratio,) = ctx.saved_tensors
        return grad * ratio, None


class _Halve(torch.autograd.Function):
    """Identity forward; backward halved: the uniform rule of a product of two input-dependent factors."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad / 2


def _layer_norm(x, module):
    """LayerNorm with 1/σ held constant (Prop. 3.4)."""
    centred = x - x.mean(dim=-1, keepdim=True)
    std = (centred.pow(2).mean(dim=-1, keepdim=True) + module.eps).sqrt()
    return centred / std.detach() * module.weight + module.bias


def gradient_x_input_bert(net, embedded: torch.Tensor, rule: str, activation=F.gelu) -> torch.Tensor:
    """Logits of Hugging Face's BertForSequenceClassification (eval, no mask) for ``embedded`` [1, L, D], written
    out with AttnLRP's rules in its backward (``rule`` "attnlrp"; "cp": the attention probabilities constant);
    ``activation`` the intermediate layers' (BERT's GELU)."""
    bert = net.bert
    length = embedded.shape[1]
    positions = bert.embeddings.position_embeddings.weight[:length]
    token_types = bert.embeddings.token_type_embeddings.weight[0]
    hidden = _layer_norm(embedded + token_types + positions, bert.embeddings.LayerNorm)
    heads = net.config.num_attention_heads
    for layer in bert.encoder.layer:
        attention = layer.attention.self

        def split(t):
            return t.view(1, length, heads, -1).transpose(1, 2)

        q, k, v = (split(m(hidden)) for m in (attention.query, attention.key, attention.value))
        scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
        probabilities = (_Halve.apply(scores) if rule == "attnlrp" else scores).softmax(dim=-1)
        if rule == "cp":
            probabilities = probabilities.detach()
        context = probabilities @ v
        context = (_Halve.apply(context) if rule == "attnlrp" else context).transpose(1, 2).reshape(1, length, -1)
        hidden = _layer_norm(layer.attention.output.dense(context) + hidden, layer.attention.output.LayerNorm)
        inner = _Identity.apply(layer.intermediate.dense(hidden), activation)
        hidden = _layer_norm(layer.output.dense(inner) + hidden, layer.output.LayerNorm)
    pooled = _Identity.apply(bert.pooler.dense(hidden[:, 0]), torch.tanh)
    return net.classifier(pooled)
