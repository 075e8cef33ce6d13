"""Privacy-attack benchmark (thin wrapper; same as ``veil bench attacks``).
"""

from veil.bench.attacks import main
from veil.bench.output import run_script

if __name__ == "__main__":
    run_script(main, __doc__)
