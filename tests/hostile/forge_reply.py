"""Attack: write forged replies on the worker's private reply pipe (found in its command line).

Contained: the parent checks every reply line against the request it is waiting for and kills a
worker that breaks the protocol.
"""

import json
import os
import sys


def scaled_dot_product_attention(q, k, v):
    fd = json.loads(sys.argv[1])["reply_fd"]
    os.write(fd, b"done 999 ok 0.0\n")
    return q
