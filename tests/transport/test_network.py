"""Proxies, TLS settings and redirects, end to end through providers (and through the transports).

Real servers on loopback only: a forward proxy written here (tests/transport/servers.py), the
project's fake providers (plain and over TLS with a throwaway ``trustme`` CA), a redirecting one.
"""

from __future__ import annotations

import base64
import ssl
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trustme

from modelyard.config.schema import OpenAIProviderConfig, TLSConfig
from modelyard.errors import UpstreamConnectionError, UpstreamStatusError
from modelyard.providers import CallOptions, Provider, build_provider
from modelyard.testing.fake_openai import FakeOpenAI
from modelyard.transport import ProxyPolicy, make_transport, plan_transport
from modelyard.transport.aiohttp import AiohttpTransport
from modelyard.transport.base import ProxyError
from modelyard.transport.fast import HttpClient
from modelyard.types import ChatRequest, Message
from tests.transport.servers import ForwardProxy, redirecting, serve_tls

CALL = CallOptions(timeout_s=5.0, connect_timeout_s=2.0)
PROXY_VARS = [f"{name}_{suffix}" for name in ("HTTP", "HTTPS", "NO", "ALL") for suffix in ("PROXY", "proxy")]
PROXY_VARS += [name.lower() for name in PROXY_VARS]


def req(text: str = "hello") -> ChatRequest:
    return ChatRequest(model="route", messages=[Message("user", text)])


@pytest.fixture(autouse=True)
def _no_env_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no proxy in the environment (and sets the ones it needs)."""
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def pki(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """PEM files: the CA, and a client certificate (its chain and key in separate files)."""
    root = tmp_path_factory.mktemp("pki")
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    client = ca.issue_cert("client@modelyard.test")
    client.cert_chain_pems[0].write_to_path(str(root / "client.pem"))
    client.private_key_pem.write_to_path(str(root / "client.key"))
    return {"ca": str(root / "ca.pem"), "cert": str(root / "client.pem"), "key": str(root / "client.key")}


def server_context(ca: trustme.CA, *, require_client_cert: bool = False) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("upstream.test", "localhost", "127.0.0.1").configure_cert(ctx)
    if require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ca.configure_trust(ctx)
    return ctx


@asynccontextmanager
async def provider(base_url: str, **config: Any) -> AsyncIterator[Provider]:
    p = build_provider("p", OpenAIProviderConfig(base_url=base_url, api_key="sk-test", **config))
    try:
        yield p
    finally:
        await p.aclose()


async def chat_text(p: Provider) -> str:
    resp = await p.chat(req(), "gpt-4o", CALL)
    return resp.choices[0].message.text()


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as f:
        yield f


@pytest.fixture
async def tls_port(fake: FakeOpenAI, ca: trustme.CA) -> AsyncIterator[int]:
    async with serve_tls(fake, server_context(ca)) as port:
        yield port


# =====================================================================================
# proxies
# =====================================================================================


async def test_configured_proxy_sees_a_plain_http_upstream_call(fake: FakeOpenAI) -> None:
    async with ForwardProxy() as proxy, provider(fake.base_url, proxy=proxy.url) as p:
        assert p.transport_plan.kind == "aiohttp"  # a configured proxy applies even to loopback
        assert await chat_text(p)
        assert (await p.list_models())[0].id
    assert [(s.method, s.target) for s in proxy.seen] == [
        ("POST", f"{fake.base_url}/chat/completions"),
        ("GET", f"{fake.base_url}/models"),
    ]
    assert proxy.seen[0].headers["authorization"] == "Bearer sk-test"


async def test_http_proxy_from_the_environment(fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    async with ForwardProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        base_url = f"http://upstream.test:{fake.port}/v1"  # only the proxy can resolve this name
        async with provider(base_url) as p:
            assert p.transport_plan.kind == "aiohttp"
            assert await chat_text(p)
            # streams go through the proxy too
            async with aclosing(p.stream(req(), "gpt-4o", CALL)) as chunks:
                assert [c async for c in chunks]
    assert [s.target for s in proxy.seen] == [f"{base_url}/chat/completions"] * 2


async def test_https_proxy_from_the_environment_tunnels_with_connect(
    fake: FakeOpenAI, tls_port: int, pki: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with ForwardProxy() as proxy:
        monkeypatch.setenv("https_proxy", proxy.url)
        monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # not for https:// upstreams
        async with provider(f"https://upstream.test:{tls_port}/v1", tls={"ca_bundle": pki["ca"]}) as p:
            assert p.transport_plan.kind == "aiohttp"
            assert await chat_text(p)
    assert [(s.method, s.target) for s in proxy.seen] == [("CONNECT", f"upstream.test:{tls_port}")]


async def test_proxy_credentials_are_sent_as_proxy_authorization(
    fake: FakeOpenAI, tls_port: int, pki: dict[str, str]
) -> None:
    expected = "Basic " + base64.b64encode(b"alice:s3cret").decode()
    async with ForwardProxy(auth=("alice", "s3cret")) as proxy:
        url = proxy.url_with_auth("alice", "s3cret")
        async with provider(fake.base_url, proxy=url) as p:
            assert await chat_text(p)
        async with provider(f"https://upstream.test:{tls_port}/v1", proxy=url, tls={"ca_bundle": pki["ca"]}) as p:
            assert await chat_text(p)
    assert [s.method for s in proxy.seen] == ["POST", "CONNECT"]
    assert all(s.headers.get("proxy-authorization") == expected for s in proxy.seen)


async def test_wrong_proxy_credentials_are_a_clear_non_retryable_error(
    fake: FakeOpenAI, tls_port: int, pki: dict[str, str]
) -> None:
    async with ForwardProxy(auth=("alice", "s3cret")) as proxy:
        url = proxy.url_with_auth("alice", "wrong")
        async with provider(fake.base_url, proxy=url) as p:
            with pytest.raises(UpstreamConnectionError) as info:
                await p.chat(req(), "gpt-4o", CALL)
        assert "407" in str(info.value) and info.value.retryable is False
        async with provider(f"https://upstream.test:{tls_port}/v1", proxy=url, tls={"ca_bundle": pki["ca"]}) as p:
            with pytest.raises(UpstreamConnectionError) as info:
                await p.chat(req(), "gpt-4o", CALL)
        assert "407" in str(info.value) and info.value.retryable is False
    assert fake.attempts() == 0


async def test_loopback_upstreams_bypass_environment_proxies(fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    async with ForwardProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        for host in ("127.0.0.1", "localhost"):
            async with provider(f"http://{host}:{fake.port}/v1") as p:
                assert p.transport_plan.kind == "fast"
                assert await chat_text(p)
    assert proxy.seen == []


async def test_no_proxy_and_proxy_none_bypass_environment_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    monkeypatch.setenv("NO_PROXY", "internal.corp, .svc.local:8443")
    assert plan_transport("https://api.openai.com/v1").kind == "aiohttp"
    assert plan_transport("https://api.openai.com/v1").proxies.proxy_for("https://api.openai.com/v1") == (
        "http://proxy.corp:3128"
    )
    for url in ("https://internal.corp/v1", "https://vllm.internal.corp/v1", "https://a.svc.local:8443/v1"):
        assert plan_transport(url).kind == "fast", url
    assert plan_transport("https://a.svc.local:9443/v1").kind == "aiohttp"  # the entry has another port
    assert plan_transport("https://api.openai.com/v1", proxy="none").kind == "fast"
    assert plan_transport("https://api.openai.com/v1", proxy="").kind == "fast"
    monkeypatch.setenv("NO_PROXY", "*")
    assert plan_transport("https://api.openai.com/v1").kind == "fast"


def test_proxy_policy_rules() -> None:
    env = ProxyPolicy(env={"http": "proxy:3128", "https": "http://p:1", "no": "example.com"})
    assert env.proxy_for("http://api.x.ai/v1") == "http://proxy:3128"
    assert env.proxy_for("https://api.x.ai/v1") == "http://p:1"
    assert env.proxy_for("https://sub.example.com/v1") is None
    assert env.proxy_for("https://notexample.com/v1") == "http://p:1"
    for loopback in ("http://127.0.0.5:1/", "http://[::1]:8000/", "http://LOCALHOST/", "http://a.localhost/"):
        assert env.proxy_for(loopback) is None, loopback
    fixed = ProxyPolicy(fixed="http://corp:8080")
    assert fixed.proxy_for("http://127.0.0.1/") == "http://corp:8080"


async def test_webhook_transport_honours_environment_proxies(fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    """Webhooks (one transport for any URL) go through HTTP_PROXY when it is set, directly otherwise."""
    assert isinstance(make_transport(), HttpClient)
    async with ForwardProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        transport = make_transport()
        assert isinstance(transport, AiohttpTransport)
        try:
            for host in ("upstream.test", "127.0.0.1"):
                resp, lease = await transport.send("GET", f"http://{host}:{fake.port}/v1/models")
                assert resp.status == 200 and b"gpt-4o" in await resp.read()
                lease.release()
        finally:
            await transport.aclose()
    assert [s.target for s in proxy.seen] == [f"http://upstream.test:{fake.port}/v1/models"]


async def test_unreachable_proxy_is_a_retryable_connection_error(fake: FakeOpenAI) -> None:
    async with provider(fake.base_url, proxy="http://127.0.0.1:9") as p:
        with pytest.raises(UpstreamConnectionError) as info:
            await p.chat(req(), "gpt-4o", CALL)
    assert info.value.retryable is True and "proxy" in str(info.value)


# =====================================================================================
# TLS
# =====================================================================================


async def test_private_ca_fails_without_ca_bundle_and_works_with_it(
    fake: FakeOpenAI, tls_port: int, pki: dict[str, str]
) -> None:
    base_url = f"https://127.0.0.1:{tls_port}/v1"
    async with provider(base_url) as p:
        assert p.transport_plan.kind == "fast"
        with pytest.raises(UpstreamConnectionError) as info:
            await p.chat(req(), "gpt-4o", CALL)
    assert info.value.retryable is False and info.value.code == "upstream_tls_error"
    assert "certificate verif" in str(info.value) and "tls.ca_bundle" in str(info.value)
    async with provider(base_url, tls={"ca_bundle": pki["ca"]}) as p:
        assert p.transport_plan.kind == "fast"
        assert await chat_text(p)
        async with aclosing(p.stream(req(), "gpt-4o", CALL)) as chunks:
            assert [c async for c in chunks]


async def test_private_ca_through_the_aiohttp_transport(
    fake: FakeOpenAI, tls_port: int, pki: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with ForwardProxy() as proxy:
        async with provider(f"https://upstream.test:{tls_port}/v1", proxy=proxy.url) as p:
            with pytest.raises(UpstreamConnectionError) as info:
                await p.chat(req(), "gpt-4o", CALL)
        assert info.value.retryable is False and info.value.code == "upstream_tls_error"
        async with provider(f"https://upstream.test:{tls_port}/v1", proxy=proxy.url, tls={"verify": False}) as p:
            assert await chat_text(p)
        # the host name is checked too: the certificate names upstream.test, localhost and 127.0.0.1 only
        async with provider(f"https://wrong.test:{tls_port}/v1", proxy=proxy.url, tls={"ca_bundle": pki["ca"]}) as p:
            with pytest.raises(UpstreamConnectionError) as info:
                await p.chat(req(), "gpt-4o", CALL)
        assert info.value.code == "upstream_tls_error"


async def test_verify_false_accepts_any_certificate(fake: FakeOpenAI, tls_port: int) -> None:
    async with provider(f"https://127.0.0.1:{tls_port}/v1", tls={"verify": False}) as p:
        assert await chat_text(p)


async def test_mutual_tls_with_a_client_certificate(fake: FakeOpenAI, ca: trustme.CA, pki: dict[str, str]) -> None:
    async with serve_tls(fake, server_context(ca, require_client_cert=True)) as port:
        base_url = f"https://localhost:{port}/v1"
        async with provider(base_url, tls={"ca_bundle": pki["ca"]}) as p:
            with pytest.raises(UpstreamConnectionError):
                await p.chat(req(), "gpt-4o", CALL)
        tls = {"ca_bundle": pki["ca"], "client_cert": pki["cert"], "client_key": pki["key"]}
        async with provider(base_url, tls=tls) as p:
            assert p.transport_plan.kind == "aiohttp"
            assert await chat_text(p)
            async with aclosing(p.stream(req(), "gpt-4o", CALL)) as chunks:
                assert [c async for c in chunks]


def test_tls_files_must_exist_at_config_load(pki: dict[str, str], tmp_path: Path) -> None:
    from modelyard.config import parse_config
    from modelyard.errors import ConfigError

    missing = str(tmp_path / "nope.pem")
    for key in ("ca_bundle", "client_cert"):
        data = {"providers": {"x": {"kind": "openai", "tls": {key: missing}}}}
        with pytest.raises(ConfigError) as info:
            parse_config(data, env={})
        assert f"providers.x.tls.{key}: file not found" in str(info.value)
    with pytest.raises(ConfigError) as info:
        parse_config({"providers": {"x": {"kind": "openai", "tls": {"client_key": pki["key"]}}}}, env={})
    assert "providers.x.tls" in str(info.value)
    with pytest.raises(ConfigError) as info:
        parse_config({"providers": {"x": {"kind": "openai", "proxy": "socks5://p:1"}}}, env={})
    assert "providers.x.proxy" in str(info.value)
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("not a certificate")
    with pytest.raises(ConfigError) as info:
        build_provider("x", OpenAIProviderConfig(tls=TLSConfig(ca_bundle=str(not_pem))))
    assert "providers.x.tls: cannot load the TLS files" in str(info.value)
    cfg = parse_config({"providers": {"x": {"kind": "openai", "proxy": "None", "tls": {"ca_bundle": pki["ca"]}}}})
    assert cfg.providers["x"].proxy == "" and cfg.providers["x"].tls == TLSConfig(ca_bundle=pki["ca"])


# =====================================================================================
# redirects
# =====================================================================================


@pytest.fixture(params=["fast", "aiohttp"])
def transport_kind(request: pytest.FixtureRequest) -> Iterator[str]:
    yield request.param


async def test_redirect_is_a_non_retryable_error_naming_the_location(transport_kind: str) -> None:
    target = "https://api.example.com/v1/chat/completions"
    async with redirecting(target) as base_url, provider(base_url) as p:
        p.transport_plan = plan_transport(base_url, kind=transport_kind)  # type: ignore[arg-type]
        with pytest.raises(UpstreamStatusError) as info:
            await p.chat(req(), "gpt-4o", CALL)
        err = info.value
        assert err.upstream_status == 301 and err.retryable is False and err.code == "upstream_redirect"
        assert f"upstream redirected (301) to {target}; fix the provider's base_url" in str(err)
        with pytest.raises(UpstreamStatusError) as info:
            async with aclosing(p.stream(req(), "gpt-4o", CALL)) as chunks:
                async for _ in chunks:
                    pass
        assert info.value.upstream_status == 301 and target in str(info.value)
        assert info.value.retryable is False
        health = await p.health()
        assert not health.ok and "redirected" in health.detail


async def test_proxy_error_type_is_a_connection_error() -> None:
    assert issubclass(ProxyError, ConnectionError)


@pytest.mark.skipif(sys.platform != "linux", reason="truststore reads SSL_CERT_FILE on Linux only")
async def test_system_trust_store_honours_ssl_cert_file(
    fake: FakeOpenAI, tls_port: int, pki: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default (truststore) context still reads SSL_CERT_FILE on Linux, the old workaround."""
    monkeypatch.setenv("SSL_CERT_FILE", pki["ca"])
    async with provider(f"https://127.0.0.1:{tls_port}/v1") as p:
        assert p.transport_plan.kind == "fast"
        assert await chat_text(p)
