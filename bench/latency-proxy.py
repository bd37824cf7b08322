#!/usr/bin/env python3
"""A TCP proxy that adds a delay to every request, to stand in for a remote object store.

    latency-proxy.py LISTEN_PORT UPSTREAM_PORT DELAY_MS

Listens on 127.0.0.1:LISTEN_PORT and forwards each connection to
127.0.0.1:UPSTREAM_PORT. Data from the client is held DELAY_MS before it is forwarded
when it arrives after a quiet moment (the start of a request), so every HTTP request
pays one round trip of DELAY_MS, as it would to a store in another building, while a
large body streams at full speed. Used by bench/writeback.sh; runs until killed.
"""
import asyncio
import sys
import time

LISTEN, UPSTREAM, DELAY = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]) / 1000.0
QUIET = 0.002  # a gap this long before data means a new request


async def pipe(reader, writer, delay):
    last = 0.0
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            now = time.monotonic()
            if delay and now - last > QUIET:
                await asyncio.sleep(delay)
            last = time.monotonic()
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def handle(client_reader, client_writer):
    try:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", UPSTREAM)
    except OSError:
        client_writer.close()
        return
    await asyncio.gather(
        pipe(client_reader, up_writer, DELAY), pipe(up_reader, client_writer, 0)
    )


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", LISTEN)
    async with server:
        await server.serve_forever()


asyncio.run(main())
