"""A TCP relay that puts a network between the bench and PostgreSQL: every chunk waits DELAY ms each way.

Run: `python bench/pg_relay.py LISTEN_PORT TARGET_PORT DELAY_MS`, then point
HELPDESK_TEST_POSTGRES_URL at LISTEN_PORT and run bench/inbound.py with HELPDESK_TEST_DATABASE=postgresql.
The relay's own work adds about 0.3 ms to a round trip with DELAY_MS 0; asyncio's timers make small
delays coarse, so measure the round trip it gives (a SELECT 1 loop) rather than trust DELAY_MS.
"""
from __future__ import annotations

import asyncio
import sys


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy one direction, each chunk sent `delay` seconds after it arrived, in order."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def send() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                writer.close()
                return
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(send())
    try:
        while data := await reader.read(65536):
            queue.put_nowait((loop.time() + delay, data))
    finally:
        queue.put_nowait((0.0, b""))
        await sender


async def _serve(listen: int, target: int, delay: float) -> None:
    async def relay(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target)
        await asyncio.gather(_pump(client_reader, server_writer, delay), _pump(server_reader, client_writer, delay),
                             return_exceptions=True)

    server = await asyncio.start_server(relay, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    listen_port, target_port, delay_ms = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    asyncio.run(_serve(listen_port, target_port, delay_ms / 1000))
