"""An MQTT broker inside a Python process, for the embedded default (`make run` on a
machine without Mosquitto). Loopback only; anonymous; MQTT 3.1.1.

    python -m poolsaas.embedded_broker --port 1883
"""

import argparse
import asyncio
import logging

from amqtt.broker import Broker


def broker_config(host: str, port: int) -> dict:
    # amqtt's bundled default listens on every interface: always name the listener.
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {
            "amqtt.plugins.authentication.AnonymousAuthPlugin": {
                "allow_anonymous": True
            },
        },
    }


async def serve(host: str, port: int) -> None:
    broker = Broker(broker_config(host, port))
    await broker.start()
    try:
        await asyncio.Event().wait()
    finally:
        await broker.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", choices=["127.0.0.1", "::1"])
    parser.add_argument("--port", type=int, default=1883)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
