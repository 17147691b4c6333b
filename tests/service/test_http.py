"""The services' client (service/http.py): whole answers, however they arrive."""

from __future__ import annotations

import asyncio

from semops.service.http import Peer

TOKEN = "eyJhbGciOiJFUzI1NiJ9." + "x" * 3000 + ".sig"


async def _answer_in_pieces(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    body = TOKEN.encode("ascii")
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/jose\r\n"
    writer.write(head + b"Content-Length: %d\r\n\r\n" % len(body) + body[:100])
    await writer.drain()
    await asyncio.sleep(0.05)  # the rest a moment later, as a slow link or TLS records do
    writer.write(body[100:])
    await writer.drain()
    writer.close()


def test_an_answer_arriving_in_pieces_is_read_whole() -> None:
    async def go() -> str:
        server = await asyncio.start_server(_answer_in_pieces, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        peer = Peer()
        try:
            url = f"http://127.0.0.1:{port}/v1/x"
            return await peer.call_jose("POST", url, jose="t", timeout_s=5)
        finally:
            await peer.close()
            server.close()

    assert asyncio.run(go()) == TOKEN


def test_a_peer_keeps_no_cookies_a_server_sets() -> None:
    seen: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            seen.append(head)
            body = TOKEN.encode("ascii")
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/jose\r\n"
                b"Set-Cookie: session=planted; Path=/\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body) + body
            )
            await writer.drain()
        writer.close()

    async def go() -> None:
        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        peer = Peer()
        try:
            # A host name: aiohttp's default jar ignores cookies from bare IP addresses.
            url = f"http://localhost:{port}/v1/x"
            for _ in range(2):
                await peer.call_jose("POST", url, jose="t", timeout_s=5)
        finally:
            await peer.close()
            server.close()

    asyncio.run(go())
    assert len(seen) == 2
    assert all(b"cookie:" not in head.lower() for head in seen)
