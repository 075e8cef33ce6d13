"""Running peer libraries (CrypTen) next to Veil in the same benchmark run.

CrypTen 0.4.1 does not install cleanly beside a current torch; the benchmarks run it
in a subprocess whose ``PYTHONPATH`` starts with ``$VEIL_CRYPTEN_PATH``, a folder made
with ``pip install --target DIR --no-deps crypten==0.4.1 pyyaml onnx protobuf omegaconf
antlr4-python3-runtime==4.9.3 ml_dtypes typing_extensions``.
"""

from __future__ import annotations

import os

from veil import config


def crypten_env() -> dict[str, str]:
    """This process's environment with ``$VEIL_CRYPTEN_PATH`` put first on ``PYTHONPATH``."""
    env = dict(os.environ)
    extra = config.crypten_path()
    if extra:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (extra, env.get("PYTHONPATH")) if p)
    return env
