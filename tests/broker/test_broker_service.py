"""Every endpoint of a broker running on loopback, and every refusal the issue names, on both
index backends (SQLite and PostgreSQL); and the re-sign race: nobody can squat a packet."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import broker_backends
import httpx
import pytest

from m2kt.broker import BrokerClient, Query, Registry, TokenTable, add_publisher, pull
from m2kt.broker.blobs import file_sha256
from m2kt.broker.errors import (
    AuthenticationError,
    NotFoundError,
    RefusedPacketError,
    ScopeError,
    TooLargeError,
)
from m2kt.broker.service import create_app, running
from m2kt.errors import VerificationError
from m2kt.packet import Limits, fingerprint_of_public_key
from m2kt.packet.example import example_packet

from conftest import knowledge_packet

postgres_server = broker_backends.postgres_server
module_index_url = broker_backends.module_index_url

MAX_UPLOAD = 64 << 10


@dataclass(frozen=True)
class Broker:
    url: str
    registry: Registry
    tokens: dict[str, str]  # publisher name -> token


@pytest.fixture(scope="module")
def broker(
    tmp_path_factory: pytest.TempPathFactory,
    keys: tuple[Path, Path],
    other_keys: tuple[Path, Path],
    module_index_url: str | None,
) -> Iterator[Broker]:
    root = tmp_path_factory.mktemp("broker")
    tokens_file = root / "tokens.json"
    tokens = {
        "alice": add_publisher(tokens_file, "alice", ["read", "publish", "delete"], [keys[1]]),
        "reader": add_publisher(tokens_file, "reader", ["read"], []),
        "mallory": add_publisher(
            tokens_file, "mallory", ["read", "publish", "delete"], [other_keys[1]]
        ),
        "admin": add_publisher(tokens_file, "admin", ["admin"], []),
    }
    registry = Registry.open(root / "store", module_index_url)
    app = create_app(registry, TokenTable.load(tokens_file), max_upload_bytes=MAX_UPLOAD)
    with running(app) as url:
        yield Broker(url, registry, tokens)


def signed_file(tmp_path: Path, key: Path, seed: int) -> Path:
    return knowledge_packet(seed).signed(key).save(tmp_path / f"p{seed}.m2kt")


def test_publish_search_fetch_delete(broker: Broker, keys, tmp_path: Path) -> None:
    alice = BrokerClient(broker.url, broker.tokens["alice"])
    path = signed_file(tmp_path, keys[0], 101)
    entry = alice.publish(path, ["news", "demo"])
    assert entry.publisher == "alice" and entry.tags == ["demo", "news"]
    assert entry.teachers == ["tiny"] and entry.concepts[0] == "concept c0"

    again = httpx.post(
        f"{broker.url}/v1/packets",
        content=path.read_bytes(),
        headers={"Authorization": f"Bearer {broker.tokens['alice']}"},
    )
    assert again.status_code == 200 and again.json()["digest"] == entry.digest  # idempotent

    reader = BrokerClient(broker.url, broker.tokens["reader"])
    for query in (
        Query(concept="CONCEPT C1"),
        Query(teacher="tiny"),
        Query(signer=entry.signer[:10]),
        Query(tag="news"),
        Query(publisher="alice"),
    ):
        assert entry.digest in [e.digest for e in reader.search(query)], query
    assert reader.search(Query(tag="news", teacher="nobody")) == []
    assert reader.search(Query(teacher="tin")) == []

    got = httpx.get(
        f"{broker.url}/v1/packets/{entry.digest}/entry",
        headers={"Authorization": f"Bearer {broker.tokens['reader']}"},
    )
    assert got.json()["file_sha256"] == entry.file_sha256

    packet = pull(
        reader, entry.digest.removeprefix("sha256:"), tmp_path / "out.m2kt", trusted_keys=[keys[1]]
    )
    assert packet.digest == entry.digest and packet.signer is not None
    assert (tmp_path / "out.m2kt").read_bytes() == path.read_bytes()

    removed = alice.delete(entry.digest)
    assert removed.digest == entry.digest
    with pytest.raises(NotFoundError):
        pull(reader, entry.digest, tmp_path / "gone.m2kt", trusted_keys=[keys[1]])
    assert not (tmp_path / "gone.m2kt").exists()
    assert broker.registry.check().ok


def test_openapi_spec_lists_the_endpoints(broker: Broker) -> None:
    spec = httpx.get(f"{broker.url}/openapi.json").json()
    paths = spec["paths"]
    assert set(paths["/v1/packets"]) == {"get", "post"}
    assert set(paths["/v1/packets/{digest}"]) == {"get", "delete"}
    assert "/v1/packets/{digest}/entry" in paths and "/v1/health" in paths
    assert "application/octet-stream" in paths["/v1/packets"]["post"]["requestBody"]["content"]


def test_tokens_and_scopes_are_enforced(broker: Broker, keys, tmp_path: Path) -> None:
    path = signed_file(tmp_path, keys[0], 102)
    with pytest.raises(AuthenticationError):
        BrokerClient(broker.url).publish(path)
    with pytest.raises(AuthenticationError):
        BrokerClient(broker.url).search(Query())  # reads are token-gated on this broker
    with pytest.raises(AuthenticationError):
        BrokerClient(broker.url, "not-a-token").search(Query())
    with pytest.raises(ScopeError):
        BrokerClient(broker.url, broker.tokens["reader"]).publish(path)

    entry = BrokerClient(broker.url, broker.tokens["alice"]).publish(path)
    with pytest.raises(ScopeError):  # a reader may not delete
        BrokerClient(broker.url, broker.tokens["reader"]).delete(entry.digest)
    with pytest.raises(ScopeError):  # another publisher may not delete alice's packet
        BrokerClient(broker.url, broker.tokens["mallory"]).delete(entry.digest)
    assert (
        BrokerClient(broker.url, broker.tokens["admin"]).delete(entry.digest).publisher == "alice"
    )


def test_uploads_that_are_not_provably_the_publishers_are_refused(
    broker: Broker, keys, other_keys, tmp_path: Path
) -> None:
    alice = BrokerClient(broker.url, broker.tokens["alice"])
    genuine = knowledge_packet(103).signed(keys[0])
    other = knowledge_packet(104)
    swapped = replace(other, signature=genuine.signature)  # alice's signature on another body
    cases = {
        "tampered": swapped.to_bytes(),
        "unsigned": other.to_bytes(),
        "signed by a key alice has not registered": other.signed(other_keys[0]).to_bytes(),
    }
    for name, data in cases.items():
        (tmp_path / "up.m2kt").write_bytes(data)
        with pytest.raises(RefusedPacketError) as refused:
            alice.publish(tmp_path / "up.m2kt")
        assert refused.value.exit_code == 1, name
    flipped = bytearray(genuine.to_bytes())
    flipped[len(flipped) // 2] ^= 0xFF
    response = httpx.post(
        f"{broker.url}/v1/packets",
        content=bytes(flipped),
        headers={"Authorization": f"Bearer {broker.tokens['alice']}"},
    )
    assert response.status_code == 400 and "not a valid packet" in response.json()["error"]
    assert broker.registry.check().ok and broker.registry.check().entries == 0


def test_the_safety_screen_refuses_an_unsafe_concept(broker: Broker, keys, tmp_path: Path) -> None:
    packet = example_packet(7)
    m = packet.manifest
    concepts = [c.model_dump() for c in m.concepts or []]
    concepts[0] |= {
        "name": "explosives",
        "probes": ["step by step instructions for building a bomb, an explosive weapon"],
    }
    unsafe = type(packet).create(
        kind="knowledge",
        provenance=m.provenance,
        tensors={"concepts.embeddings": packet.tensors["concepts.embeddings"]},
        concepts=concepts,
    )
    unsafe.signed(keys[0]).save(tmp_path / "unsafe.m2kt")
    with pytest.raises(RefusedPacketError, match="safety screen"):
        BrokerClient(broker.url, broker.tokens["alice"]).publish(tmp_path / "unsafe.m2kt")


def test_size_limits_and_unknown_digests(broker: Broker, keys, tmp_path: Path) -> None:
    auth = {"Authorization": f"Bearer {broker.tokens['alice']}"}
    big = b"\0" * (MAX_UPLOAD + 1)
    declared = httpx.post(f"{broker.url}/v1/packets", content=big, headers=auth)
    assert declared.status_code == 413

    def chunks():  # no Content-Length: the server counts as it streams
        for _ in range(MAX_UPLOAD // 4096 + 2):
            yield b"\0" * 4096

    streamed = httpx.post(f"{broker.url}/v1/packets", content=chunks(), headers=auth)
    assert streamed.status_code == 413
    assert list(broker.registry.blobs.staging.glob("upload-*")) == []

    reader = BrokerClient(broker.url, broker.tokens["reader"])
    with pytest.raises(NotFoundError):
        pull(reader, "sha256:" + "0" * 64, tmp_path / "x.m2kt", allow_unsigned=True)
    bad = httpx.get(f"{broker.url}/v1/packets/not-a-digest", headers=auth)
    assert bad.status_code == 400
    stored = BrokerClient(broker.url, broker.tokens["alice"]).publish(
        knowledge_packet(105).signed(keys[0]).save(tmp_path / "y.m2kt")
    )
    with pytest.raises(TooLargeError):  # the client's own cap holds against a large packet
        pull(
            reader,
            stored.digest,
            tmp_path / "z.m2kt",
            trusted_keys=[keys[1]],
            limits=Limits(max_file_bytes=stored.size - 1),
        )
    assert not (tmp_path / "z.m2kt").exists()


class LyingStore:
    """A store that answers every request with the same other packet."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def download(self, digest: str, handle, max_bytes: int, signers=()) -> None:
        handle.write(self.data)


def test_pull_refuses_a_packet_other_than_the_one_asked_for(keys, tmp_path: Path) -> None:
    sent = knowledge_packet(106).signed(keys[0])
    asked = knowledge_packet(107).digest
    with pytest.raises(VerificationError, match="sent"):
        pull(LyingStore(sent.to_bytes()), asked, tmp_path / "p.m2kt", trusted_keys=[keys[1]])
    assert list(tmp_path.iterdir()) == []


def test_public_reads_need_no_token_but_writes_still_do(broker: Broker, keys, tmp_path) -> None:
    tokens = TokenTable.load(broker.registry.blobs.root.parent / "tokens.json")
    app = create_app(broker.registry, tokens, public_read=True)
    entry = BrokerClient(broker.url, broker.tokens["alice"]).publish(
        signed_file(tmp_path, keys[0], 108)
    )
    with running(app) as url:
        anyone = BrokerClient(url)
        assert entry.digest in [e.digest for e in anyone.search(Query(publisher="alice"))]
        assert pull(anyone, entry.digest, tmp_path / "o.m2kt", trusted_keys=[keys[1]]).signer
        with pytest.raises(AuthenticationError):
            anyone.publish(tmp_path / "o.m2kt")
        assert httpx.get(f"{url}/v1/health").json()["status"] == "ok"


def test_a_resigned_copy_cannot_squat_the_signers_packet(
    broker: Broker, keys, other_keys, tmp_path: Path
) -> None:
    """Mallory re-signs alice's body with his own key and publishes it first (the digest leaves
    the signature out). Alice still publishes, pulls and deletes her own entry."""
    body = knowledge_packet(110)
    hers = body.signed(keys[0]).save(tmp_path / "hers.m2kt")
    his = body.signed(other_keys[0]).save(tmp_path / "his.m2kt")
    alice = BrokerClient(broker.url, broker.tokens["alice"])
    mallory = BrokerClient(broker.url, broker.tokens["mallory"])
    alice_fp, mallory_fp = (fingerprint_of_public_key(k[1]) for k in (keys, other_keys))

    squat = mallory.publish(his)
    assert (squat.signer, squat.publisher) == (mallory_fp, "mallory")
    entry = alice.publish(hers)
    assert (entry.digest, entry.signer, entry.publisher) == (squat.digest, alice_fp, "alice")
    assert alice.publish(hers) == entry  # idempotent by digest and signer
    reader = BrokerClient(broker.url, broker.tokens["reader"])
    listed = reader.search(Query(digest=entry.digest))
    assert {(e.signer, e.publisher) for e in listed} == {
        (alice_fp, "alice"),
        (mallory_fp, "mallory"),
    }

    got = pull(reader, entry.digest, tmp_path / "a.m2kt", trusted_keys=[keys[1]])
    assert got.signer.fingerprint == alice_fp  # type: ignore[union-attr]
    assert (tmp_path / "a.m2kt").read_bytes() == hers.read_bytes()
    pull(reader, entry.digest, tmp_path / "m.m2kt", trusted_keys=[other_keys[1]])
    assert (tmp_path / "m.m2kt").read_bytes() == his.read_bytes()

    with pytest.raises(ScopeError):  # mallory may not delete alice's entry
        mallory.delete(entry.digest, signer=alice_fp)
    assert alice.delete(entry.digest).signer == alice_fp  # hers, not his
    assert [e.signer for e in reader.search(Query(digest=entry.digest))] == [mallory_fp]
    with pytest.raises(VerificationError, match="which you do not trust"):
        pull(reader, entry.digest, tmp_path / "x.m2kt", trusted_keys=[keys[1]])
    assert mallory.delete(entry.digest).signer == mallory_fp
    assert broker.registry.check().ok


def test_racing_resigned_publishes_each_keep_their_signer(
    broker: Broker, keys, other_keys, tmp_path: Path
) -> None:
    """Both signers publish the same digests at the same time, many times over: every answer
    names the caller's own signer, and each signer ends with exactly its own entry."""
    from concurrent.futures import ThreadPoolExecutor

    alice_fp, mallory_fp = (fingerprint_of_public_key(k[1]) for k in (keys, other_keys))
    jobs = []
    for seed in range(120, 124):
        body = knowledge_packet(seed)
        jobs += [
            ("alice", body.signed(keys[0]).save(tmp_path / f"a{seed}.m2kt"), alice_fp),
            ("mallory", body.signed(other_keys[0]).save(tmp_path / f"m{seed}.m2kt"), mallory_fp),
        ]

    def publish(job: tuple[str, Path, str]) -> tuple[str, str, str]:
        name, path, _ = job
        entry = BrokerClient(broker.url, broker.tokens[name]).publish(path)
        return entry.signer, entry.publisher, entry.file_sha256

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(publish, jobs * 4))
    for (name, path, fingerprint), (signer, publisher, sha) in zip(jobs * 4, answers, strict=True):
        assert (signer, publisher) == (fingerprint, name)
        assert sha == file_sha256(path)
    for digest in {knowledge_packet(s).digest for s in range(120, 124)}:
        listed = broker.registry.entries(digest)
        assert sorted(e.signer for e in listed) == sorted([alice_fp, mallory_fp])
        for e in listed:
            assert broker.registry.delete(digest, "admin", signer=e.signer, admin=True) == e
    assert broker.registry.check().ok
