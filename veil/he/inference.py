"""One call for CKKS encrypted inference: client and server in one process, with a report.

:func:`encrypted_inference` converts the model, plans the parameters, lets a
:class:`~veil.he.client.Client` make keys and encrypt, a
:class:`~veil.he.server.Server` evaluate with the public keys only (both
exchange serialised bytes, so the sizes in the report are what would cross a
network), and the client decrypt.

Example
-------
>>> import torch
>>> from torch import nn
>>> from veil.he import Square, encrypted_inference
>>> net = nn.Sequential(nn.Linear(8, 4), Square(), nn.Linear(4, 2))
>>> out, report = encrypted_inference(net, torch.rand(3, 8))
>>> out.shape, report.layout, report.max_abs_error <= report.error_bound
(torch.Size([3, 2]), 'vector', True)
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from veil.he.client import Client, EncryptedBatch, PublicKeys
from veil.he.convert import HEGraph, convert
from veil.he.params import CKKSParameters
from veil.he.plan import plan
from veil.he.server import Server


@dataclass
class HEReport:
    """What one encrypted inference cost.

    Times are seconds for the whole batch; bytes are serialised sizes (SEAL's
    compressed format). ``max_abs_error`` compares with the float64 plaintext
    twin; ``error_bound`` is the stated bound (:meth:`HEGraph.error_bound`).
    """

    layout: str
    n_images: int
    ciphertexts_in: int
    params: dict
    depth: int
    keygen_s: float
    server_setup_s: float
    encrypt_s: float
    evaluate_s: float
    decrypt_s: float
    key_bytes: int
    bytes_to_server: int
    bytes_to_client: int
    max_abs_error: float
    error_bound: float

    @property
    def online_s(self) -> float:
        """Encrypt + evaluate + decrypt (keys and model encoding are one-off setup)."""
        return self.encrypt_s + self.evaluate_s + self.decrypt_s

    @property
    def per_image_s(self) -> float:
        return self.online_s / self.n_images

    def to_dict(self) -> dict:
        return {**asdict(self), "online_s": self.online_s, "per_image_s": self.per_image_s}

    def summary(self) -> str:
        p = self.params
        return (f"CKKS {self.layout}: {self.n_images} images, N={p['poly_modulus_degree']}, "
                f"moduli {p['coeff_mod_bit_sizes']}, scale 2^{p['scale_bits']}, depth "
                f"{self.depth}; encrypt {self.encrypt_s:.3f}s, evaluate {self.evaluate_s:.3f}s, "
                f"decrypt {self.decrypt_s:.3f}s ({self.per_image_s * 1e3:.1f} ms/image); "
                f"{self.bytes_to_server / 1e6:.2f} MB up, {self.bytes_to_client / 1e6:.2f} MB "
                f"down, keys {self.key_bytes / 1e6:.1f} MB; max error "
                f"{self.max_abs_error:.2e} (bound {self.error_bound:.2e})")


def encrypted_inference(model: nn.Module | HEGraph, x: torch.Tensor, layout: str = "vector",
                        params: CKKSParameters | None = None,
                        client: Client | None = None) -> tuple[torch.Tensor, HEReport]:
    """Run ``model`` on ``x`` under CKKS and return the decrypted outputs and a report.

    Parameters
    ----------
    model: an HE-friendly ``nn.Module`` (see :func:`~veil.he.convert.convert`) or a converted
        :class:`~veil.he.convert.HEGraph`.
    x: the batch, ``(batch, *input_shape)``.
    layout: ``"vector"`` (one image per ciphertext: latency) or ``"batch"`` (up to N/2 images
        per ciphertext: throughput).
    params: CKKS parameters; chosen from the model's depth when ``None``.
    client: reuse a client (and its keys) made for the same model and layout.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    graph = model if isinstance(model, HEGraph) else convert(model, tuple(x.shape[1:]))
    flat = graph.check_input(x)
    spec = plan(graph, layout, params)
    t0 = time.perf_counter()
    if client is None:
        client = Client(spec)
    elif client.spec != spec:
        raise ValueError("the client's keys were made for another model, layout or parameters")
    key_blob = client.public_keys().to_bytes()
    t1 = time.perf_counter()
    server = Server(graph, PublicKeys.from_bytes(key_blob))
    t2 = time.perf_counter()
    encrypted = client.encrypt(flat)
    up = encrypted.to_bytes()
    t3 = time.perf_counter()
    down = server.evaluate(EncryptedBatch.from_bytes(server.ctx, up)).to_bytes()
    t4 = time.perf_counter()
    out = client.decrypt(EncryptedBatch.from_bytes(client.ctx, down))
    t5 = time.perf_counter()
    ref = graph.forward(flat.reshape(x.shape))
    out = out.reshape(ref.shape)
    report = HEReport(
        layout=layout, n_images=len(flat), ciphertexts_in=sum(len(g) for g in encrypted.cts),
        params=spec.params.to_dict(), depth=graph.depth, keygen_s=t1 - t0,
        server_setup_s=t2 - t1, encrypt_s=t3 - t2, evaluate_s=t4 - t3, decrypt_s=t5 - t4,
        key_bytes=len(key_blob), bytes_to_server=len(up), bytes_to_client=len(down),
        max_abs_error=float(np.abs(out - ref).max()),
        error_bound=graph.error_bound(spec.params, float(np.abs(flat).max())))
    return torch.from_numpy(out).to(x.dtype), report
