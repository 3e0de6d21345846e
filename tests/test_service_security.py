"""Access control and hygiene on a real server: bearer tokens, the per-client cap, request IDs, security headers,
error bodies without internals, slow senders, digests in transit, and a model instance that raises."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import socket
import threading
import time

import httpx
import numpy as np
import pytest

pytest.register_assert_rewrite("service_fixtures")

from service_fixtures import MODEL, local_codec, png, running  # noqa: E402
from test_service_load import sample_value  # noqa: E402

from service.access import ClientLimiter, TokenStore  # noqa: E402
from service.client import LicClient, ServiceClientError  # noqa: E402
from service.errors import ClientBusy, InvalidToken, MissingToken  # noqa: E402
from service.middleware import RequestIdFilter  # noqa: E402

pytest_plugins = ("service_fixtures",)

ALICE, BOB = "alice-0123456789abcdef", "bob-fedcba9876543210"
TOKENS = f"alice:{ALICE},bob:{BOB}"


def compress(url: str, token: str | None = None, body: bytes | None = None, **headers) -> httpx.Response:
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(
        url + "/compress",
        params={"quality": 1},
        content=png(16, 16) if body is None else body,
        headers={"Content-Type": "image/png", **auth, **headers},
        timeout=30,
    )


# -- authentication --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def secured(weights_root):
    with running(weights_root, auth_tokens=TOKENS) as server:
        yield server


def test_without_a_token_the_codec_endpoints_answer_401_with_a_bearer_challenge(secured):
    r = compress(secured.url)
    assert r.status_code == 401 and r.json()["code"] == "auth_required"
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert httpx.post(secured.url + "/decompress", content=b"x").json()["code"] == "auth_required"
    assert httpx.get(secured.url + "/v1/models").status_code == 401


def test_a_wrong_token_gets_401_invalid_token(secured):
    r = compress(secured.url, token=ALICE + "x")
    assert r.status_code == 401 and r.json()["code"] == "invalid_token"
    assert 'error="invalid_token"' in r.headers["www-authenticate"]
    assert compress(secured.url, token="").json()["code"] == "auth_required"


def test_a_valid_token_is_served_and_the_client_library_sends_it(secured):
    assert compress(secured.url, token=BOB).status_code == 200
    with LicClient(secured.url, token=ALICE) as client:
        assert client.decompress(client.compress(png(16, 16), quality=1).stream).width == 16
    with LicClient(secured.url) as anonymous, pytest.raises(ServiceClientError) as err:
        anonymous.models()
    assert err.value.code == "auth_required"


def test_probes_and_metrics_stay_open_for_orchestrators_and_prometheus(secured):
    for path in ("/health/live", "/health/ready", "/metrics"):
        assert httpx.get(secured.url + path).status_code == 200


def test_authentication_failures_are_counted_by_reason(secured):
    compress(secured.url)
    compress(secured.url, token="not-a-valid-token-at-all")
    metrics = httpx.get(secured.url + "/metrics").text
    assert sample_value(metrics, "lic_rejections_total", reason="auth_required") >= 1
    assert sample_value(metrics, "lic_rejections_total", reason="invalid_token") >= 1


def test_every_token_is_compared_in_constant_time_whichever_matches(monkeypatch):
    store = TokenStore(",".join(f"c{i}:{'k' * 20}{i}" for i in range(5)))
    calls = []
    real = hmac.compare_digest

    def counting(a, b):
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr("service.access.hmac.compare_digest", counting)
    for presented in ("k" * 20 + "0", "k" * 20 + "4", "wrong-token-of-some-length"):
        calls.clear()
        try:
            store.authenticate(f"Bearer {presented}")
        except InvalidToken:
            pass
        assert len(calls) == 5  # no early exit on a match or a mismatch


def test_tokens_are_read_from_a_file_and_a_rotated_file_takes_effect_without_restart(weights_root, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# rotated by the secret manager\nalice:{ALICE}\n")
    with running(weights_root, auth_tokens_file=tokens) as server:
        assert compress(server.url, token=ALICE).status_code == 200
        tokens.write_text(f"bob:{BOB}\n")
        stat = tokens.stat()
        import os

        os.utime(tokens, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        assert compress(server.url, token=ALICE).json()["code"] == "invalid_token"
        assert compress(server.url, token=BOB).status_code == 200


def test_short_tokens_are_refused_at_startup():
    with pytest.raises(ValueError, match="at least 16"):
        TokenStore("alice:short")


def test_authentication_off_is_logged_loudly(weights_root, caplog):
    with caplog.at_level(logging.WARNING, logger="service"), running(weights_root):
        pass
    assert any("AUTHENTICATION IS OFF" in r.getMessage() for r in caplog.records)


def test_a_missing_or_malformed_header_is_auth_required_not_invalid():
    store = TokenStore(TOKENS)
    for header in (None, "", "Basic abc", "Bearer", "Bearer   "):
        with pytest.raises(MissingToken):
            store.authenticate(header)
    assert store.authenticate(f"bearer {ALICE}") == "alice"


# -- per-client concurrency cap --------------------------------------------------------------------------------------
def test_one_client_over_its_cap_gets_429_client_busy_while_others_are_served(weights_root):
    # requests linger up to 2 s in the batch queue, so 4 concurrent ones from one client overlap even on a slow box
    with running(weights_root, auth_tokens=TOKENS, max_in_flight_per_client=2, max_batch_delay_ms=2000) as server:
        results: dict = {}

        def send(name: str, token: str) -> None:
            results[name] = compress(server.url, token=token)

        threads = [threading.Thread(target=send, args=(f"alice{i}", ALICE)) for i in range(4)]
        threads.append(threading.Thread(target=send, args=("bob", BOB)))
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        metrics = httpx.get(server.url + "/metrics").text
    alice = sorted(results[f"alice{i}"].status_code for i in range(4))
    assert alice == [200, 200, 429, 429]
    busy = next(results[f"alice{i}"] for i in range(4) if results[f"alice{i}"].status_code == 429)
    assert busy.json()["code"] == "client_busy" and busy.headers["retry-after"]
    assert results["bob"].status_code == 200  # another client's share is untouched
    assert sample_value(metrics, "lic_rejections_total", reason="client_busy") == 2


def test_the_limiter_releases_a_slot_whatever_happens():
    limiter = ClientLimiter(max_in_flight=1, retry_after_s=1)
    with pytest.raises(RuntimeError), limiter.hold("c"):
        raise RuntimeError("the request failed")
    with limiter.hold("c"):
        with pytest.raises(ClientBusy):
            with limiter.hold("c"):
                pass
    assert limiter.in_flight("c") == 0


# -- request ids, headers, error bodies ------------------------------------------------------------------------------
def test_every_response_carries_a_request_id_and_a_sane_caller_id_is_kept(http):
    assert re.fullmatch(r"[0-9a-f]{32}", http.get("/health/live").headers["x-request-id"])
    assert http.get("/health/live", headers={"X-Request-ID": "cdn-42.a:b"}).headers["x-request-id"] == "cdn-42.a:b"
    for insane in ("has space", "x" * 200, "semi;colon"):
        assert http.get("/health/live", headers={"X-Request-ID": insane}).headers["x-request-id"] != insane


def test_log_lines_carry_the_request_id(server, caplog):
    record_filter = RequestIdFilter()
    with caplog.at_level(logging.INFO, logger="service.access"):
        caplog.handler.addFilter(record_filter)
        try:
            compress(server.url, **{"X-Request-ID": "trace-me-123"})
            # the server thread writes the access line after the last response byte: the client can be first
            deadline = time.monotonic() + 10
            access = lambda: [r for r in caplog.records if r.name == "service.access" and "/compress" in r.getMessage()]  # noqa: E731
            while not (lines := access()):
                assert time.monotonic() < deadline, "no access log line for the request"
                time.sleep(0.01)
        finally:
            caplog.handler.removeFilter(record_filter)
    assert lines[-1].request_id == "trace-me-123" and " 200 " in lines[-1].getMessage()


def test_security_headers_are_on_every_response_and_the_server_is_not_advertised(http):
    for response in (
        http.get("/health/live"),
        http.get("/no/such/route"),
        http.post("/compress", params={"quality": 1}, content=png(16, 16), headers={"Content-Type": "image/png"}),
    ):
        h = response.headers
        assert h["x-content-type-options"] == "nosniff" and h["x-frame-options"] == "DENY"
        assert "default-src 'none'" in h["content-security-policy"] and h["referrer-policy"] == "no-referrer"
        assert "server" not in h
    assert http.get("/no/such/route").headers["cache-control"] == "no-store"


def _error_responses(url: str) -> list:
    body = png(16, 16)
    return [
        httpx.post(url + "/compress", params={"quality": 9}, content=body, headers={"Content-Type": "image/png"}),
        httpx.post(url + "/compress", params={"quality": 1, "model": "nope"}, content=body),
        httpx.post(
            url + "/compress",
            params={"quality": 1},
            content=b"\x89PNG\r\n\x1a\nbroken",
            headers={"Content-Type": "image/png"},
        ),
        httpx.post(url + "/decompress", content=b"LICx" + bytes(80)),
        httpx.post(url + "/decompress", content=b"garbage"),
        httpx.post(url + "/compress", params={"quality": "x"}, content=body),
        httpx.get(url + "/nope"),
        httpx.put(url + "/compress"),
    ]


def test_error_bodies_never_hold_stack_traces_or_file_paths(server):
    for r in _error_responses(server.url):
        assert r.status_code >= 400 and set(r.json()) == {"error", "code"}
        text = r.text
        assert "Traceback" not in text and 'File "' not in text, text
        assert not re.search(r"(/[\w.-]+){2,}\.py|/tmp/|/home/|/work/|site-packages", text), text


# -- slow senders ----------------------------------------------------------------------------------------------------
def _read_until_closed_or(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_a_body_that_trickles_in_past_the_deadline_gets_408_and_others_are_served_meanwhile(server):
    body = png(16, 16)
    head = (
        f"POST /compress?quality=1 HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nX-Request-Timeout: 1\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as slow:
        slow.sendall(head + body[:10])
        t0 = time.monotonic()
        assert compress(server.url).status_code == 200  # the slow sender blocks nobody
        for i in range(10, 15):
            time.sleep(0.15)
            slow.sendall(body[i : i + 1])
        reply = _read_until_closed_or(slow, b'"code"').decode("latin-1")  # head and body can be two packets
        elapsed = time.monotonic() - t0
    assert reply.startswith("HTTP/1.1 408") and '"code":"body_timeout"' in reply
    assert elapsed < 5
    metrics = httpx.get(server.url + "/metrics").text
    assert sample_value(metrics, "lic_rejections_total", reason="body_timeout") >= 1


# -- integrity in transit --------------------------------------------------------------------------------------------
def _digest(data: bytes) -> str:
    return f"sha-256=:{base64.b64encode(hashlib.sha256(data).digest()).decode()}:"


def test_results_carry_a_repr_digest_of_their_bytes(http):
    r = http.post("/compress", params={"quality": 1}, content=png(16, 16), headers={"Content-Type": "image/png"})
    assert r.headers["repr-digest"] == _digest(r.content)
    d = http.post("/decompress", content=r.content, headers={"Content-Type": "application/octet-stream"})
    assert d.headers["repr-digest"] == _digest(d.content)


def test_an_upload_damaged_in_transit_gets_400_digest_mismatch(server):
    body = png(16, 16)
    assert compress(server.url, body=body, **{"Content-Digest": _digest(body)}).status_code == 200
    damaged = compress(server.url, body=body[:-1] + b"\0", **{"Content-Digest": _digest(body)})
    assert damaged.status_code == 400 and damaged.json()["code"] == "digest_mismatch"
    sha512 = "sha-512=:" + base64.b64encode(hashlib.sha512(body).digest()).decode() + ":, unknown=:AA==:"
    assert compress(server.url, body=body, **{"Content-Digest": sha512}).status_code == 200


def test_the_client_refuses_a_result_that_does_not_match_its_digest(server):
    def corrupt(response: httpx.Response) -> None:
        response.read()
        response._content = response.content[:-1] + bytes([response.content[-1] ^ 1])

    with LicClient(server.url, event_hooks={"response": [corrupt]}) as client, pytest.raises(ServiceClientError) as e:
        client.compress(png(16, 16), quality=1)
    assert e.value.code == "digest_mismatch"


# -- a model instance that raises ------------------------------------------------------------------------------------
def test_a_model_instance_that_raises_fails_only_its_own_request_without_internals(weights_root):
    with running(weights_root, max_batch_delay_ms=200) as server:
        inst = server.service.pool.instances[(MODEL, 1)]
        healthy = inst.codec.analyse

        def analyse(images):
            if any(image.shape[0] == 48 for image in images):
                raise RuntimeError("CUDA error: an illegal memory access at /opt/secret/path.py")
            return healthy(images)

        inst.codec.analyse = analyse
        results: dict = {}
        sizes = {"bad": 48, "good1": 16, "good2": 32}
        threads = [
            threading.Thread(target=lambda k=k, s=s: results.__setitem__(k, compress(server.url, body=png(s, s))))
            for k, s in sizes.items()
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        metrics = httpx.get(server.url + "/metrics").text
        after = compress(server.url)
    bad = results["bad"]
    assert bad.status_code == 500 and bad.json()["code"] == "internal_error"
    assert "secret" not in bad.text and "CUDA" not in bad.text
    assert results["good1"].status_code == results["good2"].status_code == after.status_code == 200
    assert results["good1"].content == local_codec(weights_root, 1).compress(np.asarray(_decoded(png(16, 16))))
    assert sample_value(metrics, "lic_rejections_total", reason="internal_error") == 1


def _decoded(data: bytes):
    from model_store.image_io import open_image

    return open_image(data)


def test_behind_a_trusted_proxy_the_cap_counts_the_forwarded_caller(weights_root):
    settings = dict(max_in_flight_per_client=1, max_batch_delay_ms=2000, forwarded_allow_ips="127.0.0.1")
    with running(weights_root, **settings) as server:
        results: dict = {}

        def send(name: str, caller: str) -> None:
            results[name] = compress(server.url, **{"X-Forwarded-For": caller})

        threads = [
            threading.Thread(target=send, args=(name, caller))
            for name, caller in (("a1", "10.0.0.1"), ("b1", "10.0.0.2"), ("a2", "10.0.0.1"))
        ]
        for t in threads:
            t.start()
            time.sleep(0.05)
        for t in threads:
            t.join(30)
    assert results["b1"].status_code == 200  # another caller behind the same proxy has its own share
    assert sorted([results["a1"].status_code, results["a2"].status_code]) == [200, 429]
