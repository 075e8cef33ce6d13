"""Homomorphic encryption (CKKS, Microsoft SEAL through TenSEAL) for private inference.

The client encrypts its images under its own key; the model owner's server
evaluates an HE-friendly model (affine layers and low-degree polynomial
activations) on the ciphertexts with public keys only; the client decrypts.

Example
-------
>>> import torch
>>> from torch import nn
>>> from veil.he import Square, encrypted_inference
>>> net = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2), Square(), nn.Flatten(), nn.Linear(18, 3))
>>> x = torch.rand(2, 1, 7, 7)
>>> out, report = encrypted_inference(net, x)
>>> bool(torch.allclose(out, net(x), atol=1e-3))
True
"""

from veil.he.client import Client, EncryptedBatch, PublicKeys
from veil.he.convert import HEGraph, HEOp, Polynomial, Square, convert
from veil.he.inference import HEReport, encrypted_inference
from veil.he.params import CKKSParameters, InsecureParametersError, choose_parameters
from veil.he.plan import HESpec, plan
from veil.he.server import Server

__all__ = ["CKKSParameters", "Client", "EncryptedBatch", "HEGraph", "HEOp", "HEReport", "HESpec",
           "InsecureParametersError", "Polynomial", "PublicKeys", "Server", "Square",
           "choose_parameters", "convert", "encrypted_inference", "plan"]
