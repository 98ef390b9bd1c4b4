"""Dashboard session cookies (modelyard.gateway.sessions): signed, idle-expiring, CSRF-bound."""

from __future__ import annotations

from modelyard.gateway.sessions import IDLE_S, REFRESH_S, SessionCodec, cookie_value

T0 = 1_800_000_000.0


def test_a_session_reads_back_and_forgeries_do_not() -> None:
    codec = SessionCodec("master-1")
    value = codec.issue("master", now=T0)
    session = codec.read(value, now=T0 + 10)
    assert session is not None and session.is_master and session.issued == int(T0)
    payload, _, sig = value.partition(".")
    # a different first character (the last one carries only four bits of the signature, and a
    # fixed replacement can equal what was there: this test once "forged" the genuine signature)
    forged = ("B" if sig[0] != "B" else "C") + sig[1:]
    assert codec.read(f"{payload}.{forged}", now=T0) is None
    assert codec.read(f"{payload[:-1]}x.{sig}", now=T0) is None
    assert codec.read("garbage", now=T0) is None and codec.read("", now=T0) is None
    assert SessionCodec("master-2").read(value, now=T0) is None  # a new master key ends every session


def test_idle_sessions_end_and_use_keeps_them_alive() -> None:
    codec = SessionCodec("m")
    value = codec.issue("abc123", now=T0)
    assert codec.read(value, now=T0 + IDLE_S - 1) is not None
    assert codec.read(value, now=T0 + IDLE_S + 1) is None
    session = codec.read(value, now=T0 + REFRESH_S - 1)
    assert session is not None and codec.refreshed(session, now=T0 + REFRESH_S - 1) is None
    later = T0 + IDLE_S - 5
    fresh = codec.refreshed(codec.read(value, now=later), now=later)  # type: ignore[arg-type]
    assert fresh is not None
    renewed = codec.read(fresh, now=later + IDLE_S - 1)
    assert renewed is not None and renewed.sid == session.sid and renewed.issued == int(T0)


def test_the_csrf_token_belongs_to_one_session() -> None:
    codec = SessionCodec("m")
    a = codec.read(codec.issue("master", now=T0), now=T0)
    b = codec.read(codec.issue("master", now=T0), now=T0)
    assert a is not None and b is not None
    assert codec.csrf_ok(a, codec.csrf(a)) and not codec.csrf_ok(a, codec.csrf(b))
    assert not codec.csrf_ok(a, None) and not codec.csrf_ok(a, "")


def test_cookie_header_parsing() -> None:
    assert cookie_value({"cookie": "a=1; modelyard_session=xyz.sig; b=2"}) == "xyz.sig"
    assert cookie_value({"cookie": "a=1"}) is None and cookie_value({}) is None
