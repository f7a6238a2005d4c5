"""A TCP forwarder that holds every chunk for a while in each direction: a destination as
far away as a network link makes it, for the benchmarks (no `tc netem` needed).

    python bench/delay_proxy.py LISTEN_PORT TARGET_PORT DELAY_MS

Listens on 127.0.0.1:LISTEN_PORT and forwards each connection to 127.0.0.1:TARGET_PORT;
a chunk read at t is written at t + DELAY_MS (in order), so a round trip costs at least
2 x DELAY_MS more. Runs in a process of its own, so that its work is not the measured
process's. Stop it with a signal.
"""

import asyncio
import sys


async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    loop = asyncio.get_running_loop()
    held: asyncio.Queue = asyncio.Queue()

    async def read() -> None:
        while data := await reader.read(256 * 1024):
            held.put_nowait((loop.time() + delay, data))
        held.put_nowait((0.0, b""))

    async def write() -> None:
        while True:
            due, data = await held.get()
            if not data:
                writer.close()
                return
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()

    await asyncio.gather(read(), write(), return_exceptions=True)


async def serve(listen_port: int, target_port: int, delay: float) -> None:
    async def connection(client_reader, client_writer):
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(
            forward(client_reader, server_writer, delay),
            forward(server_reader, client_writer, delay),
            return_exceptions=True,
        )

    server = await asyncio.start_server(connection, "127.0.0.1", listen_port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    listen, target, delay_ms = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    asyncio.run(serve(listen, target, delay_ms / 1000))
