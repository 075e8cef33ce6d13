"""The linear demo on real MNIST data: secure logits match plaintext, party 0 learns nothing."""

from veil.demos.linear import run_linear_demo


def test_linear_demo_matches_plaintext_locally():
    s = run_linear_demo(transport="local", n_images=20, n_train=2000, quiet=True)
    assert s["prediction_agreement"] == 1.0
    assert s["max_abs_error"] < 5e-3
    assert s["accuracy_secure"] >= 0.6
    assert not s["party0_learned_logits"]
    assert s["rounds"] == 2  # the matmul and the reveal to party 1
    assert s["offline_bytes"][0] < 200 < s["offline_bytes"][1]
