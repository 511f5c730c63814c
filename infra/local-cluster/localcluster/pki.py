"""Certificates and keys for the local control plane, made with `cryptography`."""

import datetime
import ipaddress
import pathlib

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_FOR = datetime.timedelta(days=365)


def _name(common_name: str, org: str | None = None) -> x509.Name:
    """Return an X.509 name; the apiserver reads CN as user and O as group."""
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _write_key(path: pathlib.Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    """Write a private key as PKCS#8 PEM readable only by its owner."""
    path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    path.chmod(0o600)


def _sign(*, subject: x509.Name, key, ca_cert: x509.Certificate | None, ca_key, extensions) -> x509.Certificate:
    """Issue a certificate for `key`, self-signed when there is no CA."""
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(subject)
               .issuer_name(ca_cert.subject if ca_cert else subject)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               # Back-dated a little so a clock step does not make a fresh cert "not yet valid".
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + VALID_FOR))
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    return builder.sign(ca_key, hashes.SHA256())


class Pki:
    """A CA in `directory` and the leaf certificates it issues, created once and reused."""

    def __init__(self, directory: pathlib.Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca_cert_path, self.ca_key_path = self.dir / "ca.crt", self.dir / "ca.key"
        if not self.ca_cert_path.exists():
            self._make_ca()
        self.ca_key = serialization.load_pem_private_key(self.ca_key_path.read_bytes(), None)
        self.ca_cert = x509.load_pem_x509_certificate(self.ca_cert_path.read_bytes())

    def _make_ca(self) -> None:
        """Create the self-signed CA that signs every other certificate here."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _sign(subject=_name("kube-job-local-ca"), key=key, ca_cert=None, ca_key=key, extensions=[
            (x509.BasicConstraints(ca=True, path_length=None), True),
            (x509.KeyUsage(False, False, False, False, False, True, True, False, False), True)])
        _write_key(self.ca_key_path, key)
        self.ca_cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str, *, common_name: str, org: str | None = None,
              server: bool = False, client: bool = False,
              ips: tuple[str, ...] = ()) -> tuple[pathlib.Path, pathlib.Path]:
        """Return (cert, key) paths for `name`, issuing them on first use."""
        cert_path, key_path = self.dir / f"{name}.crt", self.dir / f"{name}.key"
        if cert_path.exists():
            return cert_path, key_path
        key = ec.generate_private_key(ec.SECP256R1())
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
            [ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
        extensions = [(x509.BasicConstraints(ca=False, path_length=None), True),
                      (x509.ExtendedKeyUsage(usages), False)]
        if server:
            # Every name a client may dial: kubectl uses 127.0.0.1 or the node's address (`ips`),
            # pods the `kubernetes` Service (10.0.0.1) by name or address.
            sans = [x509.DNSName(d) for d in ("localhost", "kubernetes", "kubernetes.default",
                                              "kubernetes.default.svc", "kubernetes.default.svc.cluster.local")]
            sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in dict.fromkeys(("127.0.0.1", "10.0.0.1", *ips))]
            extensions.append((x509.SubjectAlternativeName(sans), False))
        cert = _sign(subject=_name(common_name, org), key=key, ca_cert=self.ca_cert,
                     ca_key=self.ca_key, extensions=extensions)
        _write_key(key_path, key)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cert_path, key_path

    def service_account_key(self) -> pathlib.Path:
        """Return the RSA key that signs and verifies service-account tokens."""
        path = self.dir / "service-account.key"
        if not path.exists():
            _write_key(path, rsa.generate_private_key(public_exponent=65537, key_size=2048))
        return path
