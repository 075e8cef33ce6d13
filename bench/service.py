"""Benchmark private inference as a service (dealer, server, client over shaped links).

Same as ``veil bench service``: ``python bench/service.py [--json] [--output F] [--quick]``.
"""

from veil.bench.output import run_script
from veil.bench.service import main

if __name__ == "__main__":
    run_script(main, __doc__)
