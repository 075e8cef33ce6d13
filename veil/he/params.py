"""CKKS encryption parameters: chosen from a model's multiplicative depth, 128-bit secure.

The bound on the coefficient modulus for each ring dimension is Table 1 of the
HomomorphicEncryption.org security standard (Albrecht et al., 2018, ternary
secrets, classical 128-bit security), the same table Microsoft SEAL enforces.
:func:`choose_parameters` picks the smallest ring that holds the model's depth at
a useful scale; :meth:`CKKSParameters.check` refuses anything above the bound.

Example
-------
>>> p = choose_parameters(depth=5, slots=1024)
>>> p.poly_modulus_degree, p.coeff_mod_bit_sizes, p.scale_bits
(8192, (36, 24, 24, 24, 24, 24, 60), 24)
>>> p.security_bits
128
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

#: Largest total coefficient-modulus size (bits) for 128-bit classical security, per ring
#: dimension N (HomomorphicEncryption.org standard, Table 1; SEAL's ``CoeffModulus.MaxBitCount``).
MAX_LOG_Q_128 = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}

#: SEAL's prime sizes are at most 60 bits; below 20 bits the scale carries too little precision.
MIN_PRIME_BITS, MAX_PRIME_BITS = 20, 60


class InsecureParametersError(ValueError):
    """The parameters give less than 128-bit security (or cannot be set at all)."""


@dataclass(frozen=True)
class CKKSParameters:
    """CKKS parameters.

    Attributes
    ----------
    poly_modulus_degree: ring dimension N (a power of two); N/2 slots per ciphertext.
    coeff_mod_bit_sizes: bit sizes of the RNS primes: the first holds the decrypted
        value (scale + integer bits), one per multiplicative level, and the last is the
        key-switching ("special") prime.
    scale_bits: log2 of the encoding scale (fractional precision).
    """

    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    scale_bits: int

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2

    @property
    def depth(self) -> int:
        """Multiplicative levels available (one rescale each)."""
        return len(self.coeff_mod_bit_sizes) - 2

    @property
    def total_bits(self) -> int:
        return sum(self.coeff_mod_bit_sizes)

    @property
    def security_bits(self) -> int:
        """128 when :meth:`check` passes (the only level Veil accepts)."""
        self.check()
        return 128

    def check(self) -> None:
        """Raise :class:`InsecureParametersError` unless 128-bit secure and usable."""
        n, bits = self.poly_modulus_degree, self.coeff_mod_bit_sizes
        if n not in MAX_LOG_Q_128:
            raise InsecureParametersError(
                f"poly_modulus_degree must be one of {sorted(MAX_LOG_Q_128)}, got {n}")
        if len(bits) < 3:
            raise InsecureParametersError("coeff_mod_bit_sizes needs at least three primes "
                                          "(data, one level, special)")
        if any(not MIN_PRIME_BITS <= b <= MAX_PRIME_BITS for b in bits):
            raise InsecureParametersError(f"every prime must have {MIN_PRIME_BITS}-"
                                          f"{MAX_PRIME_BITS} bits, got {list(bits)}")
        if self.total_bits > MAX_LOG_Q_128[n]:
            raise InsecureParametersError(
                f"a {self.total_bits}-bit coefficient modulus with N={n} is below 128-bit "
                f"security (the HE standard allows at most {MAX_LOG_Q_128[n]} bits for N={n}); "
                "use a larger poly_modulus_degree or fewer/smaller primes")
        if bits[-1] < max(bits[:-1]):
            raise InsecureParametersError("the special (last) prime must be at least as large "
                                          "as every other prime")
        if not MIN_PRIME_BITS <= self.scale_bits <= min(bits[1:-1]) + 2:
            raise InsecureParametersError(
                f"scale_bits={self.scale_bits} must match the level primes {list(bits[1:-1])}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["coeff_mod_bit_sizes"] = list(self.coeff_mod_bit_sizes)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> CKKSParameters:
        p = cls(int(d["poly_modulus_degree"]), tuple(int(b) for b in d["coeff_mod_bit_sizes"]),
                int(d["scale_bits"]))
        p.check()
        return p


def choose_parameters(depth: int, slots: int = 1, integer_bits: int = 12,
                      min_scale_bits: int = 24, max_scale_bits: int = 40) -> CKKSParameters:
    """The smallest 128-bit-secure parameters for ``depth`` levels and ``slots`` slots.

    Parameters
    ----------
    depth: multiplicative depth of the computation (rescales).
    slots: slots the layout needs in one ciphertext.
    integer_bits: bits above the scale kept for the decrypted values (|value| < 2**integer_bits).
    min_scale_bits, max_scale_bits: the range of acceptable scales; the largest that fits
        the security budget is taken (more precision at no cost in ring size).

    Raises
    ------
    InsecureParametersError
        When no ring up to N=32768 holds the depth at ``min_scale_bits`` within 128-bit security.
    """
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    for n in sorted(MAX_LOG_Q_128):
        if n < 4096 or n // 2 < slots:
            continue
        # A 60-bit special prime keeps key-switching (rotation, relinearisation) noise far below
        # the scale: total = (scale + integer_bits) + depth * scale + 60 <= budget.
        scale = min(max_scale_bits, (MAX_LOG_Q_128[n] - integer_bits - MAX_PRIME_BITS)
                    // (depth + 1), MAX_PRIME_BITS - integer_bits)
        if scale < min_scale_bits:
            continue
        params = CKKSParameters(n, (scale + integer_bits, *([scale] * depth), MAX_PRIME_BITS),
                                scale)
        params.check()
        return params
    raise InsecureParametersError(
        f"no 128-bit-secure CKKS parameters hold depth {depth} with a {min_scale_bits}-bit "
        f"scale and {slots} slots (N <= 32768); reduce the model's depth")
