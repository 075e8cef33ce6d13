"""Deployment credentials: a private CA and one certificate per role, for mutual TLS 1.3.

Every TCP link between Veil participants is TLS 1.3 with certificates required
on *both* sides. A deployment has its own certificate authority (CA); each
role (``party0`` = the model owner, ``party1`` = the data owner, ``dealer``)
has a key pair and a certificate signed by that CA whose subject common name
is the role. A peer is accepted only if its certificate chains to the
deployment's CA **and** names the role expected at that end of the link, so a
process holding one role's key cannot join as another role, and a process that
knows only the addresses cannot join at all.

Why certificates and not a pre-shared key: Python 3.11's :mod:`ssl` has no
TLS 1.3 PSK callbacks, and a hand-made PSK handshake would be new cryptography
to get wrong. Certificates give each role its own secret (a leaked data-owner
key does not let anyone impersonate the dealer), and OpenSSL does all of the
cryptography. Hostnames are not checked: participants are identified by role,
not by DNS name, so a deployment can move between hosts without re-issuing.

Layout of a keys directory (written by :func:`init_keys`, ``veil keys init DIR``)::

    DIR/ca.pem            the CA certificate (public; every host needs it)
    DIR/ca.key            the CA private key (keep it offline: only needed to issue)
    DIR/<role>.pem        the role's certificate
    DIR/<role>.key        the role's private key (copy it only to that role's host)

Private keys are written with mode 0600. Keys are ECDSA P-256 (supported by
every TLS 1.3 stack; signatures are fast enough that a handshake costs about a
millisecond).

Example
-------
>>> import tempfile
>>> from veil.comm.credentials import Credentials, init_keys
>>> d = tempfile.mkdtemp()
>>> _ = init_keys(d)
>>> creds = Credentials.load(d, "dealer")
>>> creds.role
'dealer'
>>> ctx = creds.context(server=True)
"""

from __future__ import annotations

import datetime as _dt
import functools
import os
import ssl
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from veil.comm.errors import CommError

#: Role names, indexed by rank: party 0 (model owner), party 1 (data owner), the dealer.
ROLES: tuple[str, str, str] = ("party0", "party1", "dealer")
#: Default validity of issued certificates, in days.
DEFAULT_DAYS = 365

_ORG = "Veil deployment"


class CredentialsError(CommError):
    """Credentials are missing, unreadable, invalid, expired, or of the wrong role."""


def role_of_rank(rank: int) -> str:
    """The role name of participant ``rank`` (0, 1, or 2 for the dealer)."""
    if rank not in (0, 1, 2):
        raise ValueError(f"rank must be 0, 1 or 2, got {rank!r}")
    return ROLES[rank]


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise CredentialsError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
    return role


@dataclass(frozen=True)
class Credentials:
    """One role's credentials: the deployment CA, the role's certificate and private key.

    Build with :meth:`load` (from a keys directory) or :func:`ephemeral` (a fresh
    in-memory deployment for one run on one host). The private key never
    appears in ``repr``.
    """

    role: str
    ca_pem: bytes = field(repr=False)
    cert_pem: bytes = field(repr=False)
    key_pem: bytes = field(repr=False)

    @classmethod
    def load(cls, directory: str | os.PathLike, role: str) -> Credentials:
        """Read ``ca.pem``, ``<role>.pem`` and ``<role>.key`` from ``directory`` and check them.

        Raises :class:`CredentialsError` naming the file when one is missing or
        unreadable, when the certificate was not issued by that CA, names another
        role, or is expired or not yet valid.
        """
        role = _check_role(role)
        d = Path(directory).expanduser()
        if not d.is_dir():
            raise CredentialsError(f"keys directory {d} does not exist "
                                   "(create one with `veil keys init DIR`)")
        pems = {}
        for name in ("ca.pem", f"{role}.pem", f"{role}.key"):
            path = d / name
            try:
                pems[name] = path.read_bytes()
            except FileNotFoundError:
                raise CredentialsError(
                    f"{path} is missing: the {role} needs ca.pem, {role}.pem and {role}.key "
                    "from `veil keys init`") from None
            except OSError as exc:
                raise CredentialsError(f"cannot read {path}: {exc.strerror}") from None
        creds = cls(role, pems["ca.pem"], pems[f"{role}.pem"], pems[f"{role}.key"])
        creds.check(source=str(d))
        return creds

    def check(self, source: str = "credentials") -> None:
        """Validate: parseable, signed by the CA, for this role, within validity, key matches."""
        from cryptography import x509
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization

        try:
            ca = x509.load_pem_x509_certificate(self.ca_pem)
        except ValueError:
            raise CredentialsError(f"{source}: ca.pem is not a PEM certificate") from None
        try:
            cert = x509.load_pem_x509_certificate(self.cert_pem)
        except ValueError:
            raise CredentialsError(f"{source}: {self.role}.pem is not a PEM certificate") from None
        try:
            key = serialization.load_pem_private_key(self.key_pem, password=None)
        except (ValueError, TypeError):
            raise CredentialsError(
                f"{source}: {self.role}.key is not an unencrypted PEM private key") from None
        try:
            cert.verify_directly_issued_by(ca)
        except (InvalidSignature, ValueError, TypeError) as exc:
            raise CredentialsError(f"{source}: {self.role}.pem was not issued by this ca.pem "
                                   f"({type(exc).__name__})") from None
        name = _common_name(cert)
        if name != self.role:
            raise CredentialsError(f"{source}: {self.role}.pem is a certificate for role "
                                   f"{name!r}, not {self.role!r}")
        if key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo) != \
                cert.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo):
            raise CredentialsError(f"{source}: {self.role}.key does not match {self.role}.pem")
        now = _dt.datetime.now(_dt.timezone.utc)
        for what, c in (("ca.pem", ca), (f"{self.role}.pem", cert)):
            if now > c.not_valid_after_utc:
                raise CredentialsError(f"{source}: {what} expired on "
                                       f"{c.not_valid_after_utc:%Y-%m-%d %H:%M} UTC; issue new "
                                       "credentials with `veil keys init`")
            if now < c.not_valid_before_utc:
                raise CredentialsError(f"{source}: {what} is not valid before "
                                       f"{c.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")

    @property
    def expires(self) -> _dt.datetime:
        """When this role's certificate expires (UTC)."""
        from cryptography import x509

        return x509.load_pem_x509_certificate(self.cert_pem).not_valid_after_utc

    def context(self, server: bool) -> ssl.SSLContext:
        """An SSL context for mutual TLS 1.3 with this role's certificate.

        Both sides require a certificate from the deployment CA
        (``CERT_REQUIRED``); hostnames are not checked (roles are, by
        :func:`peer_role` after the handshake). ``server`` picks the side of
        the handshake: the participant that accepted the TCP connection.
        Built once per credentials and side, then shared by every connection.
        """
        return _context(self, server)


@functools.lru_cache(maxsize=32)
def _context(creds: Credentials, server: bool) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    if server:
        ctx.num_tickets = 0  # no resumption: every connection authenticates afresh
    ctx.load_verify_locations(cadata=creds.ca_pem.decode("ascii"))
    # ssl loads a certificate chain only from files: a private temporary directory,
    # removed at once.
    with tempfile.TemporaryDirectory(prefix="veil-tls-") as tmp:
        cert_path, key_path = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        _write_private(cert_path, creds.cert_pem)
        _write_private(key_path, creds.key_pem)
        try:
            ctx.load_cert_chain(cert_path, key_path)
        except ssl.SSLError as exc:
            raise CredentialsError(f"the {creds.role} certificate or key is unusable: "
                                   f"{exc.reason or exc}") from None
    return ctx


def peer_role(tls: ssl.SSLObject | ssl.SSLSocket) -> str:
    """The role named by the verified certificate of the peer of a completed handshake."""
    cert = tls.getpeercert()
    if not cert:
        raise CredentialsError("the peer presented no certificate")
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    raise CredentialsError("the peer certificate names no role")


def _common_name(cert) -> str | None:
    from cryptography.x509.oid import NameOID

    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else None


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)  # also when the file existed with wider permissions


# ------------------------------------------------------------------------------ issuing

def _issue(roles: Iterable[str], days: int, deployment: str
           ) -> tuple[bytes, bytes, dict[str, tuple[bytes, bytes]]]:
    """A new CA and one certificate per role: ``(ca_pem, ca_key_pem, {role: (cert, key)})``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if days <= 0:
        raise ValueError("days must be positive")
    now = _dt.datetime.now(_dt.timezone.utc)
    start, end = now - _dt.timedelta(minutes=5), now + _dt.timedelta(days=days)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"{_ORG} {deployment}"),
                          x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def key_pem(key) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM,
                                 serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name("Veil CA")
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, key_cert_sign=True, crl_sign=True,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    out: dict[str, tuple[bytes, bytes]] = {}
    for role in roles:
        _check_role(role)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(name(role)).issuer_name(ca_name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(start).not_valid_after(end)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                             key_encipherment=False, data_encipherment=False,
                                             key_agreement=False, key_cert_sign=False,
                                             crl_sign=False, encipher_only=False,
                                             decipher_only=False), critical=True)
                # every participant is a TLS server on some links and a client on others
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]),
                               critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    ca_key.public_key()), critical=False)
                .sign(ca_key, hashes.SHA256()))
        out[role] = (cert.public_bytes(serialization.Encoding.PEM), key_pem(key))
    return ca.public_bytes(serialization.Encoding.PEM), key_pem(ca_key), out


def init_keys(directory: str | os.PathLike, *, days: int = DEFAULT_DAYS,
              roles: Sequence[str] = ROLES, overwrite: bool = False) -> list[Path]:
    """Create a deployment's CA and one certificate per role in ``directory``.

    Parameters
    ----------
    directory: created (mode 0700) if missing.
    days: validity of the CA and the role certificates.
    roles: the roles to issue (default all three).
    overwrite: replace existing credentials (otherwise refuse: a new CA would lock out
        the hosts that already have the old one).

    Returns
    -------
    The paths written: ``ca.pem``, ``ca.key``, then ``<role>.pem`` and ``<role>.key``.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not overwrite and (d / "ca.pem").exists():
        raise CredentialsError(f"{d} already holds credentials (ca.pem); use overwrite "
                               "(--force) to replace them")
    deployment = os.urandom(6).hex()
    ca_pem, ca_key, issued = _issue(roles, days, deployment)
    written = []
    for fname, data in [("ca.pem", ca_pem), ("ca.key", ca_key)] + [
            (f"{r}.{ext}", pem) for r, (c, k) in issued.items()
            for ext, pem in (("pem", c), ("key", k))]:
        path = d / fname
        _write_private(path, data)
        if fname.endswith(".pem"):
            os.chmod(path, 0o644)  # certificates are public
        written.append(path)
    return written


def ephemeral(roles: Sequence[str] = ROLES, days: int = 1) -> dict[str, Credentials]:
    """A fresh in-memory deployment (CA key discarded): credentials for one run on one host.

    The single-host launcher gives each process only its own role's credentials,
    so its links are authenticated and encrypted like those of a multi-host run.
    """
    ca_pem, _ca_key, issued = _issue(roles, days, os.urandom(6).hex())
    return {r: Credentials(r, ca_pem, c, k) for r, (c, k) in issued.items()}
