"""Attack: return an object that claims to equal anything.

Contained: only plain data crosses the sandbox wall; the object is refused in the worker.
"""


class Everything:
    def __eq__(self, other):
        return True

    def __ne__(self, other):
        return False

    __hash__ = object.__hash__


def scaled_dot_product_attention(q, k, v):
    return Everything()
