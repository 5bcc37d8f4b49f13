"""Attack: return a subclass of a plain type (a float that equals anything).

Contained: plain.dump accepts exact types only.
"""


class Yes(float):
    def __eq__(self, other):
        return True

    __hash__ = float.__hash__


def scaled_dot_product_attention(q, k, v):
    return [Yes(0.0)]
