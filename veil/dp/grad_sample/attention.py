"""nn.MultiheadAttention (hence nn.TransformerEncoderLayer / DecoderLayer), used as it is.

During a DP-SGD forward the layer is re-run on its own parameters, following
``F.multi_head_attention_forward``: the q/k/v input projections (packed, or separate
``q/k/v_proj_weight``) and the output projection through :class:`LinearTap` (whole
sequences at once, ghost-normed), ``bias_k``/``bias_v`` through :class:`DirectTap`, and
the attention itself with ``F.scaled_dot_product_attention`` (or explicit softmax when
the weights are returned). Masks (2-D/3-D ``attn_mask``, ``key_padding_mask``, boolean
or float, ``is_causal``), ``add_bias_kv``, ``add_zero_attn``, dropout, ``batch_first``
and unbatched inputs behave as in PyTorch. Outside DP-SGD the native forward runs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from veil.dp.grad_sample.parts import DirectTap, PartsRule, tapped_linear
from veil.dp.grad_sample.registry import register


@register(nn.MultiheadAttention)
class MultiheadAttentionRule(PartsRule):
    covers_children = True  # out_proj

    @staticmethod
    def forward(module: nn.MultiheadAttention, record, query, key, value,  # type: ignore[override]
                key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        if not record.active:
            return type(module).forward(module, query, key, value, key_padding_mask,
                                        need_weights, attn_mask, average_attn_weights,
                                        is_causal)
        return _run(module, record, query, key, value, key_padding_mask, need_weights,
                    attn_mask, average_attn_weights, is_causal)


def _project(m, record, x, rows, which):
    """(L, B, E) -> (L, B, E) through the tapped projection of q, k or v."""
    xb = x.transpose(0, 1)  # the tap records batch-first tensors
    if m._qkv_same_embed_dim:
        y = tapped_linear(record, xb, m, "in_proj_weight",
                          "in_proj_bias" if m.in_proj_bias is not None else None, rows)
    else:
        y = tapped_linear(record, xb, m, f"{which}_proj_weight", None)
        if m.in_proj_bias is not None:
            y = y + _bias_rows(m, record, rows, xb.shape[0])
    return y.transpose(0, 1)


def _bias_rows(m, record, rows, b):
    """in_proj_bias[rows] broadcast over the batch (separate projection weights)."""
    e = rows.stop - rows.start

    def on_backward(g):  # (B, L, e): per-sample gradient = sum over positions
        full = g.new_zeros(g.shape[0], m.in_proj_bias.shape[0])
        full[:, rows] = g.sum(1)
        record("direct", "in_proj_bias", full)

    return DirectTap.apply(m.in_proj_bias[rows].detach().view(1, 1, e).expand(b, 1, e),
                           m.in_proj_bias, on_backward)


def _run(m: nn.MultiheadAttention, record, query, key, value, key_padding_mask, need_weights,
         attn_mask, average_attn_weights, is_causal):
    if m.batch_first and query.dim() == 3:
        query, key, value = (t.transpose(0, 1) for t in (query, key, value))
    batched = query.dim() == 3
    if not batched:
        query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
        if key_padding_mask is not None:
            key_padding_mask = key_padding_mask.unsqueeze(0)
    tgt_len, bsz, e = query.shape
    heads, hd = m.num_heads, m.head_dim
    key_padding_mask = F._canonical_mask(
        mask=key_padding_mask, mask_name="key_padding_mask",
        other_type=F._none_or_dtype(attn_mask), other_name="attn_mask",
        target_type=query.dtype)
    if is_causal and attn_mask is None:
        raise RuntimeError("Need attn_mask if specifying the is_causal hint.")
    if is_causal and key_padding_mask is None and not need_weights:
        attn_mask = None
    else:
        attn_mask = F._canonical_mask(mask=attn_mask, mask_name="attn_mask", other_type=None,
                                      other_name="", target_type=query.dtype,
                                      check_other=False)
        if key_padding_mask is not None:
            is_causal = False
    thirds = [slice(i * e, (i + 1) * e) for i in range(3)]
    if m._qkv_same_embed_dim and query is key and key is value:
        # self-attention: one product for q, k and v (one record for the whole weight)
        xb = query.transpose(0, 1)
        qkv = tapped_linear(record, xb, m, "in_proj_weight",
                            "in_proj_bias" if m.in_proj_bias is not None else None)
        q, k, v = (t.transpose(0, 1) for t in qkv.chunk(3, -1))
    else:
        q = _project(m, record, query, thirds[0], "q")
        k = _project(m, record, key, thirds[1], "k")
        v = _project(m, record, value, thirds[2], "v")
    if attn_mask is not None and attn_mask.dim() == 2:
        attn_mask = attn_mask.unsqueeze(0)
    if m.bias_k is not None and m.bias_v is not None:
        k = torch.cat([k, _direct(record, "bias_k", m.bias_k, bsz)])
        v = torch.cat([v, _direct(record, "bias_v", m.bias_v, bsz)])
        if attn_mask is not None:
            attn_mask = F.pad(attn_mask, (0, 1))
        if key_padding_mask is not None:
            key_padding_mask = F.pad(key_padding_mask, (0, 1))
    q = q.reshape(tgt_len, bsz * heads, hd).transpose(0, 1)
    k = k.reshape(k.shape[0], bsz * heads, hd).transpose(0, 1)
    v = v.reshape(v.shape[0], bsz * heads, hd).transpose(0, 1)
    if m.add_zero_attn:
        zeros = q.new_zeros(bsz * heads, 1, hd)
        k, v = torch.cat([k, zeros], 1), torch.cat([v, zeros], 1)
        if attn_mask is not None:
            attn_mask = F.pad(attn_mask, (0, 1))
        if key_padding_mask is not None:
            key_padding_mask = F.pad(key_padding_mask, (0, 1))
    src_len = k.shape[1]
    if key_padding_mask is not None:
        kpm = key_padding_mask.view(bsz, 1, 1, src_len).expand(-1, heads, -1, -1).reshape(
            bsz * heads, 1, src_len)
        attn_mask = kpm if attn_mask is None else attn_mask + kpm
    dropout_p = m.dropout if m.training else 0.0
    weights = None
    if need_weights:
        scores = (q * math.sqrt(1.0 / hd)) @ k.transpose(-2, -1)
        if attn_mask is not None:
            scores = scores + attn_mask
        weights = torch.softmax(scores, -1)
        if dropout_p > 0:
            weights = F.dropout(weights, p=dropout_p)
        out = weights @ v
        weights = weights.view(bsz, heads, tgt_len, src_len)
        if average_attn_weights:
            weights = weights.mean(1)
    else:
        if attn_mask is not None and attn_mask.shape[0] == bsz * heads:
            attn_mask = attn_mask.view(bsz, heads, -1, src_len)
        out = F.scaled_dot_product_attention(
            q.view(bsz, heads, tgt_len, hd), k.view(bsz, heads, src_len, hd),
            v.view(bsz, heads, src_len, hd), attn_mask, dropout_p, is_causal)
        out = out.view(bsz * heads, tgt_len, hd)
    out = out.view(bsz, heads, tgt_len, hd).permute(0, 2, 1, 3).reshape(bsz, tgt_len, e)
    out = tapped_linear(record, out, m, "out_proj.weight",
                        "out_proj.bias" if m.out_proj.bias is not None else None)
    out = out.transpose(0, 1)  # (L, B, E)
    if m.batch_first and batched:
        out = out.transpose(0, 1)
    if not batched:
        out = out.squeeze(1)
        weights = weights.squeeze(0) if weights is not None else None
    return out, weights


def _direct(record, name: str, param: torch.Tensor, bsz: int) -> torch.Tensor:
    """A (1, 1, E) parameter appended per sample: (1, B, E), recording ∂L per sample."""

    def on_backward(g):  # (1, B, E)
        record("direct", name, g.transpose(0, 1))

    return DirectTap.apply(param.detach().expand(1, bsz, param.shape[-1]), param, on_backward)
