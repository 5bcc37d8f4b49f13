"""Attack: patch the grader's own modules inside the worker, so that the output is written as a
pickle (an object array that would run code when unpickled) and errors are hidden.

Contained: the trusted side reads with allow_pickle=False and checks every array header, so the
output is refused as not plain data.
"""

import io
import json
import zipfile
from pathlib import Path

import numpy as np

import graders.plain
import graders.worker


class Payload:
    def __reduce__(self):
        return (print, ("this would run on the trusted side",))


def evil_dump(obj, folder, name):
    buffer = io.BytesIO()
    np.save(buffer, np.array([Payload()], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(Path(folder) / f"{name}.npz", "w") as zf:
        zf.writestr("a0.npy", buffer.getvalue())
    node = {"ndarray": "a0", "dtype": "|O", "shape": [1]}
    tree = {"format": graders.plain.FORMAT, "root": node}
    (Path(folder) / f"{name}.json").write_text(json.dumps(tree))


graders.plain.dump = evil_dump
graders.worker.describe_error = lambda *args: "no error here"


def scaled_dot_product_attention(q, k, v):
    return q
