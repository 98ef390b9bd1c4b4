"""The server's write buffer for a client that reads slowly (#20: slow readers), over real loopback."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import uvicorn
from uvicorn.server import ServerState

from modelyard.server import protocol
from modelyard.server.protocol import Limits, protocol_for

FRAME = 16 * 1024


async def test_a_slow_client_has_at_most_one_frame_waiting_in_user_space() -> None:
    """An answer streamed to a client that reads nothing: the app's next write waits once more than
    ``_WRITE_HIGH`` waits in the transport, so it holds at most that plus one frame (uvloop's and
    asyncio's default, 64 KiB, would let four frames pile up before the first wait)."""
    sent = 0

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal sent
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for _ in range(400):  # 6.4 MB: far more than the kernel's buffers on the way hold
            await send({"type": "http.response.body", "body": b"z" * FRAME, "more_body": True})
            sent += 1
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    config = uvicorn.Config(app, http=protocol_for(Limits()), lifespan="off", log_level="warning")
    config.load()
    state = ServerState()
    made: list[Any] = []
    loop = asyncio.get_running_loop()

    def factory() -> Any:
        proto = config.http_protocol_class(config=config, server_state=state, app_state={}, _loop=loop)
        made.append(proto)
        return proto

    server = await loop.create_server(factory, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.setblocking(False)
    try:
        await loop.sock_connect(client, ("127.0.0.1", port))
        await loop.sock_sendall(client, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(10):
            while not made or made[0].flow is None or not made[0].flow.write_paused:
                await asyncio.sleep(0.01)  # the kernel's buffers fill up, then the transport's
        waiting = made[0].transport.get_write_buffer_size()
        assert protocol._WRITE_HIGH <= 4096
        assert 0 < waiting <= 4096 + FRAME + 16  # + the chunk header and its CRLFs
        assert 0 < sent < 400  # the app waits: back-pressure reached it
    finally:
        client.close()
        server.close()
        for proto in made:
            proto.transport.close()
        await asyncio.sleep(0.05)
