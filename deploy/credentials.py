"""Make the credentials of a Flower deployment: a CA, the SuperLink's TLS certificate, and one
authentication key pair per SuperNode.

    python deploy/credentials.py OUT_DIR --supernodes N [--superlink-host NAME_OR_IP ...]

Writes into OUT_DIR (created; existing files are never overwritten):

- ``ca.crt``: the certificate authority every SuperNode and ``flwr`` trust (their
  ``--root-certificates`` / ``root-certificates``); ``ca.key`` signs it and later certificates:
  keep it off the deployment's machines.
- ``superlink.crt``, ``superlink.key``: the SuperLink's TLS certificate and key, valid for each
  ``--superlink-host`` (the names and addresses SuperNodes and ``flwr`` dial) and for loopback,
  which the SuperLink's own SuperExec dials when the SuperLink listens there.
- ``supernode-<i>.key``, ``supernode-<i>.pub``: SuperNode i's key pair (EC P-384, OpenSSH
  format, as Flower 1.41 reads them). The private key goes to SuperNode i only
  (``--auth-supernode-private-key``); the public key is what ``flwr supernode register`` gives
  the SuperLink.

Private keys are written readable by their owner only. Enough for tests and for a first
deployment; an organisation with its own CA issues the SuperLink's certificate from that CA
instead. Needs only ``cryptography``, which Flower itself depends on.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOOPBACK = ["localhost", "127.0.0.1", "::1"]


def certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None,
                issuer_key: ec.EllipticCurvePrivateKey, days: int,
                hosts: list[str]) -> x509.Certificate:
    """A CA certificate (self-signed: `issuer` None) or a server certificate for `hosts`."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(name).issuer_name(issuer.subject if issuer else name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(hours=1))  # clock skew
               .not_valid_after(now + datetime.timedelta(days=days))
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                              critical=False))
    if issuer is None:
        builder = (builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
                   .add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                                False, False), True))  # cert and CRL signing
    else:
        sans = []
        for host in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = (builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
                   .add_extension(x509.KeyUsage(True, False, False, False, False, False, False,
                                                False, False), True)  # digital signature
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                                  False)
                   .add_extension(x509.SubjectAlternativeName(sans), False)
                   .add_extension(
                       x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                       False))
    return builder.sign(issuer_key, hashes.SHA384())


def write(path: Path, data: bytes, private: bool) -> None:
    """Create `path` (never overwrite), owner-only if `private`."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    with os.fdopen(descriptor, "wb") as out:
        out.write(data)


def make_credentials(out: Path, supernodes: int, hosts: list[str], days: int) -> list[Path]:
    """Write the files listed in the module docstring; return their paths."""
    names = ["ca.crt", "ca.key", "superlink.crt", "superlink.key",
             *(f"supernode-{i}.{ext}" for i in range(supernodes) for ext in ("key", "pub"))]
    out.mkdir(parents=True, exist_ok=True)
    if existing := [name for name in names if (out / name).exists()]:
        raise FileExistsError(f"{out} already holds {', '.join(existing)}: not overwriting "
                              "credentials; choose another folder")
    pem = serialization.Encoding.PEM
    ca_key, link_key = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(
        ec.SECP384R1())
    ca = certificate("fedsim deployment CA", ca_key, None, ca_key, days, [])
    link = certificate("fedsim SuperLink", link_key, ca, ca_key, days,
                       list(dict.fromkeys(hosts + LOOPBACK)))
    files = {"ca.crt": (ca.public_bytes(pem), False),
             "ca.key": (_private_pem(ca_key), True),
             "superlink.crt": (link.public_bytes(pem), False),
             "superlink.key": (_private_pem(link_key), True)}
    for i in range(supernodes):
        key = ec.generate_private_key(ec.SECP384R1())
        files[f"supernode-{i}.key"] = (key.private_bytes(
            pem, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()), True)
        files[f"supernode-{i}.pub"] = (key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH), False)
    for name in names:
        write(out / name, *files[name])
    return [out / name for name in names]


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder for the credentials (created)")
    parser.add_argument("--supernodes", type=int, required=True,
                        help="number of SuperNode key pairs (supernode-0 ... supernode-<N-1>)")
    parser.add_argument("--superlink-host", action="append", default=[], metavar="NAME_OR_IP",
                        help="a name or address SuperNodes and flwr use to reach the SuperLink "
                        "(repeatable; loopback is always included)")
    parser.add_argument("--days", type=int, default=365, help="validity of the certificates")
    args = parser.parse_args(argv)
    try:
        files = make_credentials(args.out, args.supernodes, args.superlink_host, args.days)
    except (FileExistsError, ValueError) as err:
        print(f"credentials: error: {err}", file=sys.stderr)
        return 2
    print("\n".join(str(path) for path in files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
