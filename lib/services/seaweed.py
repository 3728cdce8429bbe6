"""Locking SeaweedFS `weed mini` down, so that only its S3 gateway, with the keys, reaches the lake.

Besides the S3 gateway, weed mini runs a master, a volume server, a filer and an admin server, each
with an HTTP port and a gRPC port (HTTP + 10000) and unix sockets in /tmp, and by default none of
them asks who is calling: the filer's HTTP port reads, writes and deletes any object, the master's
deletes a bucket's volumes, and `weed filer.copy` writes through the filer's gRPC port. What closes
each one (measured on weed 4.48; tests/test_services.py proves it on every port weed opens):

- filer and master HTTP: `-disableHttp`. The filer then answers 404 to everything; the master
  keeps only its status page and /cluster/status (the topology, no objects).
- volume HTTP: the JWT keys in security.toml. Reading or writing a file id needs a token that only
  the filer and master hand out, over gRPC; without one the answer is 401.
- admin HTTP: `-admin.ui=false` leaves /health and /metrics; a password too, should the UI return.
- every gRPC port and gRPC unix socket: mutual TLS, with a certificate signed by a CA made at each
  start, so a client without that certificate cannot finish the handshake.

weed finds security.toml through `-config_dir`; nothing is written to $HOME or /etc. Keys,
password and certificates are made afresh at every start (nothing stored depends on them) and are
readable by their owner only, like everything else weed writes (it runs with umask 077).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import secrets
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SECURITY_FILE = "security.toml"
# Telemetry off as well: weed mini reports to telemetry.seaweedfs.com by default, and a local lake has no business
# phoning home (nor, on machines without internet, the means).
LOCKDOWN_FLAGS = ("-disableHttp", "-admin.ui=false", "-master.telemetry=false")
UMASK = 0o077

# The gRPC sections weed mini reads: servers present `cert`, clients (the worker, the S3 gateway's
# dialer) present it too, and every server requires a client certificate signed by `grpc.ca`.
GRPC_COMPONENTS = ("master", "volume", "filer", "s3", "admin", "worker", "client")
JWT_SECTIONS = ("jwt.signing", "jwt.signing.read", "jwt.filer_signing", "jwt.filer_signing.read")
CERTIFICATE_DAYS = 3650


def write_private(path: Path, data: bytes) -> None:
    """Write a file only its owner can read, whatever mode an earlier copy had."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(fd, 0o600)
        handle.write(data)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def write_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A fresh CA and one certificate it signed, for every component as server and as client.

    weed does not check host names on gRPC (clients skip server verification; servers verify the
    client's chain), so one certificate serves all; the CA's key is thrown away once it has signed.
    """
    now = datetime.datetime.now(datetime.UTC)
    validity = dict(not_valid_before=now - datetime.timedelta(minutes=5),
                    not_valid_after=now + datetime.timedelta(days=CERTIFICATE_DAYS))
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("seaweedfs lake CA")
    ca = (x509.CertificateBuilder(**validity).subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder(**validity).subject_name(_name("seaweedfs")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "grpc-ca.crt", directory / "grpc.crt", directory / "grpc.key"
    write_private(paths[0], ca.public_bytes(serialization.Encoding.PEM))
    write_private(paths[1], cert.public_bytes(serialization.Encoding.PEM))
    write_private(paths[2], _pem_key(key))
    return paths


def _toml(sections: dict[str, dict[str, str | bool]]) -> str:
    # JSON's string escapes are valid in TOML's basic strings, and its booleans are TOML's.
    return "".join(f"[{name}]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items()) + "\n"
                   for name, values in sections.items())


def write_security_config(directory: Path) -> Path:
    """Write security.toml (fresh JWT keys, admin password, gRPC certificates) into `directory`; return it."""
    ca, cert, key = write_certificates(directory)
    sections: dict[str, dict[str, str | bool]] = {
        name: {"key": secrets.token_urlsafe(32)} for name in JWT_SECTIONS}
    sections["access"] = {"ui": False}  # the volume server's status page
    sections["grpc"] = {"ca": str(ca)}
    sections |= {f"grpc.{component}": {"cert": str(cert), "key": str(key)} for component in GRPC_COMPONENTS}
    sections["admin"] = {"user": "admin", "password": secrets.token_urlsafe(24)}
    write_private(directory / SECURITY_FILE, _toml(sections).encode())
    return directory


def weed_environment(environ: dict[str, str]) -> dict[str, str]:
    """The environment without WEED_* variables: weed lets them override security.toml."""
    return {key: value for key, value in environ.items() if not key.startswith("WEED_")}
