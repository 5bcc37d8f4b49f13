"""Attack: return a torch.Tensor subclass whose comparisons always say yes.

Contained: only exact torch.Tensor (or nn.Parameter) crosses the wall; the subclass is refused.
"""

import torch


class Agreeable(torch.Tensor):
    def __eq__(self, other):
        return torch.ones_like(self, dtype=torch.bool)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in (torch.allclose, torch.equal):
            return True
        return super().__torch_function__(func, types, args, kwargs or {})


def scaled_dot_product_attention(q, k, v):
    return torch.zeros(*q.shape[:-1], v.shape[-1]).as_subclass(Agreeable)
