"""What the server checks before it makes anything: that its ports are free and its TLS
files are readable and belong together. A server that cannot listen must say why
before it creates a signing key, evaluates a model or writes a state directory."""

from __future__ import annotations

import socket
from pathlib import Path

from fedge.config import ServerConfig
from fedge.errors import FedgeError


def check_port(host: str, port: int, what: str) -> None:
    """Raises a FedgeError naming the cause if host:port cannot be bound now (0, any
    free port, is never checked)."""
    if port == 0:
        return
    host = host.strip("[]")  # gRPC's spelling of an IPv6 address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As a listener would: a port held only by closing connections is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            cause = "it is already in use" if exc.errno == 98 else exc.strerror
            raise FedgeError(f"cannot listen on {host}:{port} for {what}: {cause}; stop "
                             f"what holds it or choose another port") from None


def check_tls_files(cert: str, key: str, client_ca: str = "") -> None:
    """Raises a FedgeError if the certificate, key or client CA cannot be read or
    parsed, or if the certificate is not the key's."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        pem_cert, pem_key = Path(cert).read_bytes(), Path(key).read_bytes()
        pem_ca = Path(client_ca).read_bytes() if client_ca else None
    except OSError as exc:
        raise FedgeError(f"cannot read the TLS key or certificates: {exc}") from None
    try:
        certificate = x509.load_pem_x509_certificate(pem_cert)
    except ValueError:
        raise FedgeError(f"TLS certificate {cert} is not a PEM certificate") from None
    try:
        private = serialization.load_pem_private_key(pem_key, password=None)
    except (ValueError, TypeError):
        raise FedgeError(f"TLS key {key} is not an unencrypted PEM private key") from None
    if pem_ca is not None:
        try:
            x509.load_pem_x509_certificates(pem_ca)
        except ValueError:
            raise FedgeError(f"TLS client CA {client_ca} is not a PEM certificate") from None
    der = serialization.Encoding.DER
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if (certificate.public_key().public_bytes(der, spki)
            != private.public_key().public_bytes(der, spki)):
        raise FedgeError(f"TLS certificate {cert} does not match the key {key}: give the "
                         "key the certificate was issued for")


def preflight(config: ServerConfig) -> None:
    """The checks a server runs before it creates or writes anything."""
    check_port(config.host, config.port, "gRPC")
    if config.metrics_port:
        check_port(config.host, config.metrics_port, "--metrics-port")
    if not config.insecure:
        check_tls_files(config.tls_cert, config.tls_key, config.tls_client_ca)
