"""Attack: write one enormous file into the work folder.

Contained: RLIMIT_FSIZE makes the write fail ("File too large").
"""


def scaled_dot_product_attention(q, k, v):
    with open("big.bin", "wb") as f:
        while True:
            f.write(b"\0" * 2**20)
