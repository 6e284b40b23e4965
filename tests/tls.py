"""Certificates for the TLS tests: a CA of the test's own and a server certificate it signs."""

from __future__ import annotations

import subprocess
from pathlib import Path


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca_and_server(folder: Path, name: str) -> None:
    """``name``-ca.pem and server certificate ``name``.crt/.key for localhost, signed by it."""
    folder.mkdir(parents=True, exist_ok=True)
    ca = ("-subj", f"/CN={name} test CA")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", *ca,
            "-keyout", f"{name}-ca.key", "-out", f"{name}-ca.pem", cwd=folder)  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=folder)  # fmt: skip
    (folder / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{name}-ca.pem",
            "-CAkey", f"{name}-ca.key", "-CAcreateserial", "-days", "1",
            "-extfile", "san.ext", "-out", f"{name}.crt", cwd=folder)  # fmt: skip
