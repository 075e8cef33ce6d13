"""The model owner's side of HE inference: evaluates an :class:`~veil.he.convert.HEGraph` on
ciphertexts with the client's public keys only.

Scale management: every plaintext factor of an affine map is encoded at the
scale of the prime the next rescale drops, so a product rescales back to the
ciphertext's exact scale; squares move the scale to ``s**2 / q``, which SEAL
tracks exactly. Plaintext diagonals (``vector`` layout) are encoded once, when
the server is built: that is model preprocessing, not per-query work.

Example
-------
>>> import numpy as np
>>> from torch import nn
>>> from veil.he.client import Client
>>> from veil.he.convert import Square, convert
>>> from veil.he.plan import plan
>>> g = convert(nn.Sequential(nn.Linear(6, 4), Square(), nn.Linear(4, 2)), (6,))
>>> client = Client(plan(g, "batch"))
>>> server = Server(g, client.public_keys())
>>> x = np.linspace(-1, 1, 18).reshape(3, 6)
>>> out = client.decrypt(server.evaluate(client.encrypt(x)))
>>> bool(np.abs(out - g.forward(x)).max() < 1e-3)
True
"""

from __future__ import annotations

import numpy as np
import tenseal.sealapi as seal

from veil.he.ckks import CKKSContext
from veil.he.client import EncryptedBatch, PublicKeys
from veil.he.convert import HEGraph, HEOp
from veil.he.plan import bsgs, plan, pow2


class Server:
    """Evaluates ``graph`` on :class:`~veil.he.client.EncryptedBatch` es under ``keys``.

    Raises
    ------
    ValueError
        When the keys' spec does not describe this model (layout, sizes, depth).
    """

    def __init__(self, graph: HEGraph, keys: PublicKeys):
        expected = plan(graph, keys.spec.layout, keys.spec.params)
        if expected != keys.spec:
            raise ValueError(f"the client's keys were made for another model or layout: "
                             f"{keys.spec.to_dict()} != {expected.to_dict()}")
        self.graph, self.keys, self.ctx = graph, keys, keys.ctx
        self._zero = seal.Encryptor(self.ctx.context, keys.public_key)
        self._steps: list = []
        level = 0
        for op in graph.ops:
            if op.kind == "affine" and keys.spec.layout == "vector":
                self._steps.append(_VectorAffine(self.ctx, op, level, self._zeros))
            else:
                self._steps.append(op)
            level += op.depth

    def evaluate(self, enc: EncryptedBatch) -> EncryptedBatch:
        """The encrypted outputs for encrypted inputs (nothing is decrypted)."""
        spec = self.keys.spec
        if enc.layout != spec.layout or enc.features != spec.in_features:
            raise ValueError(f"ciphertexts are in the {enc.layout!r} layout with {enc.features} "
                             f"features; this server expects {spec.layout!r} with "
                             f"{spec.in_features}")
        for g in enc.cts:
            for ct in g:
                if self.ctx.level_of(ct) != 0 or ct.size() != 2:
                    raise ValueError("ciphertexts must be fresh encryptions under these "
                                     "parameters")
        groups = [self._run(list(g)) for g in enc.cts]
        period = pow2(spec.out_features) if spec.layout == "vector" else 0
        return EncryptedBatch(enc.layout, enc.n, spec.out_features, period, groups)

    def _run(self, cts: list[seal.Ciphertext]) -> list[seal.Ciphertext]:
        level = 0
        for step in self._steps:
            if isinstance(step, _VectorAffine):
                cts = [step(cts[0], self.keys.galois_keys)]
            elif step.kind == "affine":
                cts = self._batch_affine(step, cts, level)
            elif step.kind == "square":
                cts = [self._square(ct) for ct in cts]
            else:
                cts = [self._poly(step.coeffs, ct, level) for ct in cts]
            level += 1 if isinstance(step, _VectorAffine) else step.depth
        return cts

    # -- ops (ciphertexts of one group)
    def _square(self, ct: seal.Ciphertext) -> seal.Ciphertext:
        ev = self.ctx.evaluator
        out = seal.Ciphertext(self.ctx.context)
        ev.square(ct, out)
        ev.relinearize_inplace(out, self.keys.relin_keys)
        ev.rescale_to_next_inplace(out)
        return out

    def _poly(self, coeffs: tuple[float, ...], x: seal.Ciphertext, level: int) -> seal.Ciphertext:
        """``c0 + x (c1 + c2 x)``: two levels."""
        c0, c1, c2 = coeffs
        ctx, ev = self.ctx, self.ctx.evaluator
        t = seal.Ciphertext(ctx.context)
        ev.multiply_plain(x, ctx.encode(c2, level, ctx.last_prime(level)), t)
        ev.rescale_to_next_inplace(t)
        if c1:
            ev.add_plain_inplace(t, ctx.encode(c1, level + 1, t.scale))
        x1 = seal.Ciphertext(ctx.context)
        ev.mod_switch_to_next(x, x1)
        out = seal.Ciphertext(ctx.context)
        ev.multiply(t, x1, out)
        ev.relinearize_inplace(out, self.keys.relin_keys)
        ev.rescale_to_next_inplace(out)
        if c0:
            ev.add_plain_inplace(out, ctx.encode(c0, level + 2, out.scale))
        return out

    def _batch_affine(self, op: HEOp, xs: list[seal.Ciphertext], level: int
                      ) -> list[seal.Ciphertext]:
        """One output ciphertext per row: sum of ciphertext x scalar products, one rescale."""
        ctx, ev = self.ctx, self.ctx.evaluator
        q = ctx.last_prime(level)
        nonzero = np.abs(op.matrix * q) >= 0.5  # a weight that rounds to 0 is 0
        out = []
        tmp = seal.Ciphertext(ctx.context)
        for j in range(op.out_features):
            acc = None
            for i in np.flatnonzero(nonzero[j]):
                pt = ctx.encode(float(op.matrix[j, i]), level, q)
                if acc is None:
                    acc = seal.Ciphertext(ctx.context)
                    ev.multiply_plain(xs[i], pt, acc)
                else:
                    ev.multiply_plain(xs[i], pt, tmp)
                    ev.add_inplace(acc, tmp)
            if acc is None:
                acc = self._zeros(level, xs[0].scale * q)
            ev.rescale_to_next_inplace(acc)
            if op.bias[j]:
                ev.add_plain_inplace(acc, ctx.encode(float(op.bias[j]), level + 1, acc.scale))
            out.append(acc)
        return out

    def _zeros(self, level: int, scale: float) -> seal.Ciphertext:
        ct = seal.Ciphertext(self.ctx.context)
        self._zero.encrypt_zero(self.ctx.parms_id(level), ct)
        ct.scale = scale
        return ct


class _VectorAffine:
    """``y = M x + b`` on one replicated ciphertext: Gazelle's hybrid diagonal method with
    baby-step/giant-step rotations (all by powers of two), then a rotate-and-add fold."""

    def __init__(self, ctx: CKKSContext, op: HEOp, level: int, zeros):
        self.ctx, self.level, self.zeros = ctx, level, zeros
        p_in, p_out, slots = pow2(op.in_features), pow2(op.out_features), ctx.slots
        self.diagonals, self.baby, self.giant = bsgs(p_in, p_out)
        period = max(p_in, p_out)
        m = np.zeros((p_out, p_in))
        m[:op.out_features, :op.in_features] = op.matrix
        s = np.arange(period)
        i = np.arange(self.diagonals)
        diag = m[(s % p_out)[None, :], (s[None, :] + i[:, None]) % p_in]
        tiled = np.tile(diag, (1, slots // period))
        q = ctx.last_prime(level)
        self.plaintexts: list[list[seal.Plaintext | None]] = []
        for g in range(self.giant):
            row = []
            for b in range(self.baby):
                d = np.roll(tiled[g * self.baby + b], g * self.baby)
                row.append(ctx.encode(d, level, q) if np.any(np.abs(d * q) >= 0.5) else None)
            self.plaintexts.append(row)
        self.folds = []
        k = p_in // 2
        while k >= p_out:
            self.folds.append(k)
            k //= 2
        bias = np.zeros(p_out)
        bias[:op.out_features] = op.bias
        self.bias = np.tile(bias, slots // p_out)
        self.scale_factor = q

    def __call__(self, ct: seal.Ciphertext, galois: seal.GaloisKeys) -> seal.Ciphertext:
        ctx, ev = self.ctx, self.ctx.evaluator
        babies = [ct]
        for _ in range(1, self.baby):
            nxt = seal.Ciphertext(ctx.context)
            ev.rotate_vector(babies[-1], 1, galois, nxt)
            babies.append(nxt)
        result = None
        tmp = seal.Ciphertext(ctx.context)
        for g in reversed(range(self.giant)):
            inner = None
            for b, pt in enumerate(self.plaintexts[g]):
                if pt is None:
                    continue
                if inner is None:
                    inner = seal.Ciphertext(ctx.context)
                    ev.multiply_plain(babies[b], pt, inner)
                else:
                    ev.multiply_plain(babies[b], pt, tmp)
                    ev.add_inplace(inner, tmp)
            if result is not None:
                ev.rotate_vector_inplace(result, self.baby, galois)
                if inner is not None:
                    ev.add_inplace(result, inner)
            else:
                result = inner
        if result is None:  # an all-zero matrix: the bias alone
            result = self.zeros(self.level, ct.scale * self.scale_factor)
        # Folding before the rescale keeps the rotations' key-switching noise at the product's
        # larger scale, where it is negligible.
        for k in self.folds:
            ev.rotate_vector(result, k, galois, tmp)
            ev.add_inplace(result, tmp)
        ev.rescale_to_next_inplace(result)
        if np.any(self.bias):
            ev.add_plain_inplace(result, ctx.encode(self.bias, self.level + 1, result.scale))
        return result
