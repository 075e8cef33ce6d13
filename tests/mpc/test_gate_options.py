"""SecretTensor methods forward gate options (DReLU bits, one-hot selections, method)."""

import torch

import veil


def _job(party):
    x = party.share(torch.tensor([-1.5, 2.0, 0.0, 3.25]) if party.rank == 0 else None,
                    owner=0, shape=(4,))
    y, bits = x.relu(return_drelu=True)
    _, onehot = x.reshape(1, 1, 2, 2).max_pool2d(2, return_onehot=True)
    return y.reveal(), bits.reveal(), onehot.reveal().reshape(-1), x.drelu(method="ariann").reveal()


def test_relu_bits_pool_onehot_and_method_are_forwarded():
    y, bits, onehot, ariann = veil.run(_job, transport="local")[1]
    assert torch.equal(y, torch.tensor([0.0, 2.0, 0.0, 3.25]))
    assert bits.tolist() == [0, 1, 1, 1]  # exact DReLU: 1{x >= 0}
    assert onehot.tolist() == [0, 0, 0, 1]
    assert ariann.tolist() == [0, 1, 0, 1]  # AriaNN's comparison: 1{x > 0}
