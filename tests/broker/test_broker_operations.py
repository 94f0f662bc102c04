"""Operating a broker: HTTPS, token expiry and revocation, the per-token rate limit, the access
log and /healthz, on a real `m2kt serve` process."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import time
from pathlib import Path

import httpx
import pytest
from broker_backends import ServerProcess
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from m2kt.broker import add_publisher
from m2kt.cli import main


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = directory / "cert.pem", directory / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certfile, keyfile


def test_https_rate_limit_expiry_revocation_access_log_and_healthz(
    tmp_path: Path, keys, capsys
) -> None:
    tokens_file = tmp_path / "tokens.json"
    alice = add_publisher(tokens_file, "alice", ["read"], [keys[1]])
    certfile, keyfile = self_signed(tmp_path)
    server = ServerProcess(
        tmp_path / "store",
        tokens_file,
        None,
        *("--certfile", str(certfile), "--keyfile", str(keyfile), "--rate-limit", "1"),
        certfile=certfile,
    ).start()
    try:
        assert server.url.startswith("https://")
        health = httpx.get(f"{server.url}/healthz", verify=server.verify)
        assert health.status_code == 200 and health.json()["index"] == "ok"
        with pytest.raises(httpx.HTTPError):  # plain HTTP is not served on that port
            httpx.get(server.url.replace("https", "http") + "/v1/health")

        def search(token: str) -> httpx.Response:
            auth = {"Authorization": f"Bearer {token}"}
            return httpx.get(f"{server.url}/v1/packets", headers=auth, verify=server.verify)

        first, second = search(alice), search(alice)  # one a second, bursts of one
        assert first.status_code == 200
        assert second.status_code == 429 and int(second.headers["Retry-After"]) >= 1
        soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)  # added while it runs
        brief = add_publisher(tokens_file, "brief", ["read"], [], expires_at=soon)
        assert search(brief).status_code == 200
        time.sleep(max(0.0, (soon - dt.datetime.now(dt.UTC)).total_seconds()) + 0.1)
        assert search(brief).status_code == 401  # expired

        time.sleep(1.1)  # alice's bucket refills
        assert search(alice).status_code == 200
        assert main(["serve", "--tokens", str(tokens_file), "--revoke", "alice"]) == 0
        revoked = search(alice)
        assert revoked.status_code == 401 and "expired" in revoked.json()["error"]
        assert main(["serve", "--tokens", str(tokens_file), "--revoke", "nobody"]) == 2
        assert "no publisher 'nobody'" in capsys.readouterr().err
    finally:
        server.stop()
    lines = [json.loads(line) for line in server.log.read_text().splitlines() if line[:1] == "{"]
    statuses = [(r["path"], r["status"], r["publisher"]) for r in lines]
    assert ("/v1/packets", 429, "alice") in statuses and ("/v1/packets", 401, None) in statuses
    assert ("/healthz", 200, None) in statuses
    assert all({"time", "method", "ms", "client"} <= set(r) for r in lines)
