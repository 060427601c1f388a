"""A Redis-compatible server inside a Python process (fakeredis), for the embedded
default: `make run` on a machine without Redis still gets a channel layer that the web
server and the bridge share, and a Celery broker. Loopback only; nothing on disk.

    python -m poolsaas.embedded_redis --port 16379
"""

import argparse
import logging

from fakeredis import TcpFakeServer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", choices=["127.0.0.1", "::1"])
    parser.add_argument("--port", type=int, default=16379)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    server = TcpFakeServer((args.host, args.port), server_type="redis")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
