"""moto_server, answering one request at a time.

DynamoDB applies each conditional write atomically: two writers racing for
one item see exactly one win. moto's server is threaded and its DynamoDB
model takes no lock, so a condition check and its write can interleave with
another request's, and both racers win. Lease and single-use tests would
then measure moto, not the gateway. This launcher runs the same moto
application behind one lock (connections stay concurrent and keep-alive;
requests are handled one after the other).

    python moto_serial.py -H 127.0.0.1 -p 4566
"""

import argparse
import os
import signal
import sys
import threading

from werkzeug.serving import run_simple

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    args = parser.parse_args()
    os.environ.setdefault("MOTO_PORT", str(args.port))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))

    moto = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def serial(environ, start_response):
        with lock:
            # The whole body is produced under the lock.
            return [b"".join(moto(environ, start_response))]

    run_simple(
        args.host,
        args.port,
        serial,
        threaded=True,
        use_reloader=False,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()
