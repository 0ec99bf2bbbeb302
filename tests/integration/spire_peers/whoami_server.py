"""A grpc.aio mTLS server with its own SVID: ``WhoAmI/Call`` answers with what it knows of the caller.

Prints ``LISTENING <port>`` once serving; runs until SIGTERM. The answer (JSON) holds the caller's
SPIFFE ID and certificate serial (from the TLS auth context) and this server's current SVID serial,
so a test can see rotations on both sides without trusting either process's own report alone.
"""

import argparse
import asyncio
import json
import signal

import grpc
import grpc.aio
from cryptography import x509

from payplane.adapters.grpc_mtls import CallerAllowList, server_credentials
from payplane.adapters.svid import SvidSource

SERVICE = "payplane.test.WhoAmI"
METHOD = f"/{SERVICE}/Call"


def _peer_certificate_serial(context: grpc.aio.ServicerContext[bytes, bytes]) -> int | None:
    pem = next(iter(context.auth_context().get("x509_pem_cert", ())), None)
    return x509.load_pem_x509_certificate(pem).serial_number if pem else None


async def serve(allowed_ids: list[str]) -> None:
    allow_list = CallerAllowList(allowed_ids)
    with SvidSource() as source:

        async def call(_request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
            caller = await allow_list.authorize(context)
            answer = {
                "caller": caller,
                "caller_serial": _peer_certificate_serial(context),
                "server_serial": source.material().serial_number,
            }
            return json.dumps(answer).encode()

        server = grpc.aio.server()
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, {"Call": grpc.unary_unary_rpc_method_handler(call)}),)
        )
        port = server.add_secure_port("127.0.0.1:0", server_credentials(source))
        await server.start()
        print(f"LISTENING {port}", flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await server.stop(grace=1.0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--allow", action="append", default=[], help="a SPIFFE ID allowed to call")
    asyncio.run(serve(parser.parse_args().allow))


if __name__ == "__main__":
    main()
