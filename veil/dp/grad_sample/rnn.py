"""nn.RNN / nn.LSTM / nn.GRU, used as they are: exact per-sample gradients.

During a DP-SGD forward the layer is re-run on its own parameters: the input
projections ``x W_ihᵀ + b_ih`` of all time steps in one product (a :class:`LinearTap`),
then the recurrence step by step with ``W_hh`` (detached: its per-sample gradient is
computed, not its batch gradient). The gates' pre-activation gradients ``δ_t`` arrive
in one tensor through the input tap; since the gates add the input and hidden
products, ``∂L/∂(h_{t-1} W_hhᵀ + b_hh) = δ_t`` too (for GRU's candidate gate, ``r_t ⊙ δ_t``),
so per sample ``∇W_ih = Σ_t δ_t x_tᵀ`` and ``∇W_hh = Σ_t δ_t h_{t-1}ᵀ``, ghost-normed
over the whole sequence. Bidirectional and multi-layer layers, ``batch_first`` both
ways, with or without an initial state, and unbatched inputs are supported;
``PackedSequence`` inputs and LSTM projections (``proj_size``) are refused.
Outside DP-SGD (eval mode, no grad, or the model called directly) the layer runs its
own native forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from veil.dp.grad_sample.parts import LinearTap, PartsRule
from veil.dp.grad_sample.registry import register


@register(nn.RNN, nn.LSTM, nn.GRU)
class RNNRule(PartsRule):
    def supports(self, module: nn.Module) -> bool:
        return not getattr(module, "proj_size", 0)

    @staticmethod
    def forward(module: nn.RNNBase, record, input, hx=None):  # type: ignore[override]
        if not record.active:
            return type(module).forward(module, input, hx)
        if isinstance(input, PackedSequence):
            raise NotImplementedError(
                f"{type(module).__name__}: PackedSequence inputs are not supported under "
                "DP-SGD; pad the sequences (and mask the loss) instead")
        return _run(module, record, input, hx)


class _Holder:
    """What the input tap's backward needs from the recurrence run after it."""

    h_prev: torch.Tensor
    r: torch.Tensor | None = None


def _run(m: nn.RNNBase, record, input: torch.Tensor, hx):
    lstm = m.mode == "LSTM"
    batched = input.dim() == 3
    if not batched:
        input = input.unsqueeze(0 if m.batch_first else 1)
        if hx is not None:
            hx = tuple(h.unsqueeze(1) for h in hx) if lstm else hx.unsqueeze(1)
    x = input if m.batch_first else input.transpose(0, 1)  # (B, T, D)
    b = x.shape[0]
    dirs = 2 if m.bidirectional else 1
    if hx is None:
        zeros = x.new_zeros(m.num_layers * dirs, b, m.hidden_size)
        h0, c0 = zeros, zeros
    elif lstm:
        h0, c0 = hx
    else:
        h0, c0 = hx, None
    layer_in = x
    h_n, c_n = [], []
    for layer in range(m.num_layers):
        outs = []
        for d in range(dirs):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            seq = layer_in.flip(1) if d else layer_in
            k = layer * dirs + d
            out, h, c = _direction(m, record, sfx, seq, h0[k], c0[k] if lstm else None)
            outs.append(out.flip(1) if d else out)
            h_n.append(h)
            c_n.append(c)
        layer_in = torch.cat(outs, -1) if dirs == 2 else outs[0]
        if m.dropout and m.training and layer < m.num_layers - 1:
            layer_in = F.dropout(layer_in, m.dropout, training=True)
    output = layer_in if m.batch_first else layer_in.transpose(0, 1)
    hn = torch.stack(h_n)
    state = (hn, torch.stack(c_n)) if lstm else hn
    if not batched:
        output = output.squeeze(0 if m.batch_first else 1)
        state = tuple(s.squeeze(1) for s in state) if lstm else state.squeeze(1)
    return output, state


def _direction(m: nn.RNNBase, record, sfx: str, seq: torch.Tensor, h: torch.Tensor,
               c: torch.Tensor | None):
    holder = _Holder()
    w_ih, w_hh = f"weight_ih{sfx}", f"weight_hh{sfx}"
    b_ih, b_hh = (f"bias_ih{sfx}", f"bias_hh{sfx}") if m.bias else (None, None)
    gru = m.mode == "GRU"

    def on_backward(a: torch.Tensor, g: torch.Tensor) -> None:
        record("linear", w_ih, b_ih, None, a, g)
        gh = g
        if gru:  # candidate gate: r ⊙ (h W_hnᵀ + b_hn)
            hsz = m.hidden_size
            gh = torch.cat([g[..., :2 * hsz], g[..., 2 * hsz:] * holder.r], -1)
        record("linear", w_hh, b_hh, None, holder.h_prev, gh)

    gi = LinearTap.apply(seq, getattr(m, w_ih), getattr(m, b_ih) if b_ih else None, on_backward)
    wh = getattr(m, w_hh).detach()
    bh = getattr(m, b_hh).detach() if b_hh else None
    hs, rs = [], []
    for t in range(seq.shape[1]):
        hs.append(h)
        gh = F.linear(h, wh, bh)
        if m.mode == "LSTM":
            i, f, g, o = (gi[:, t] + gh).chunk(4, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
        elif gru:
            ir, iz, in_ = gi[:, t].chunk(3, 1)
            hr, hz, hn = gh.chunk(3, 1)
            r = torch.sigmoid(ir + hr)
            z = torch.sigmoid(iz + hz)
            n = torch.tanh(in_ + r * hn)
            h = (1 - z) * n + z * h
            rs.append(r)
        else:
            pre = gi[:, t] + gh
            h = torch.tanh(pre) if m.mode == "RNN_TANH" else torch.relu(pre)
    out = torch.stack(hs[1:] + [h], 1)
    holder.h_prev = torch.stack(hs, 1).detach()
    if gru:
        holder.r = torch.stack(rs, 1).detach()
    return out, h, c

