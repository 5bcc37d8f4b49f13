"""Hidden grading cases for qlora: shapes, block sizes and dtypes unlike the public specs'.

Weights that are quantised are drawn on the trusted side and then moved away from the midpoints
between NF4 values (an element within 1e-3 of a midpoint, relative to its block's absmax, is set
to zero), so that every correct rounding, whatever its order of operations, picks the same code and
the codes can be compared exactly.
"""

import torch
import torch.nn.functional as F

from graders.cases import Case

# The paper's NF4 values (a published constant), used only to clean the inputs.
NF4 = torch.tensor(
    [
        -1.0,
        -0.6961928009986877,
        -0.5250730514526367,
        -0.39491748809814453,
        -0.28444138169288635,
        -0.18477343022823334,
        -0.09105003625154495,
        0.0,
        0.07958029955625534,
        0.16093020141124725,
        0.24611230194568634,
        0.33791524171829224,
        0.44070982933044434,
        0.5626170039176941,
        0.7229568362236023,
        1.0,
    ]
)
MIDPOINTS = (NF4[1:] + NF4[:-1]) / 2


def away_from_ties(w, block_size):
    """w with every element near a rounding boundary (relative to its block) set to zero."""
    flat = w.reshape(-1).float()
    blocks = F.pad(flat, (0, (-flat.numel()) % block_size)).view(-1, block_size)
    absmax = blocks.abs().amax(1, keepdim=True)
    x = blocks / absmax
    near = (x[..., None] - MIDPOINTS).abs().amin(-1) < 1e-3
    blocks = blocks.masked_fill(near & (blocks.abs() < absmax), 0.0)
    return blocks.view(-1)[: flat.numel()].view(w.shape).to(w.dtype)


# ---------------------------------------------------------------- calls (run in the sandbox)


def table(m):
    return m.nf4_values()


def quantize(m, w, block_size):
    packed, absmax = m.quantize_nf4(w, block_size=block_size)
    return {"packed": packed, "absmax": absmax}


def dequantize(m, packed, absmax, shape, block_size):
    return m.dequantize_nf4(packed, absmax, tuple(shape), block_size=block_size)


def round_trip(m, w, block_size):
    packed, absmax = m.quantize_nf4(w, block_size=block_size)
    return m.dequantize_nf4(packed, absmax, w.shape, block_size=block_size)


def double_quantize(m, absmax, block_size):
    codes, scales, mean = m.double_quantize(absmax, block_size=block_size)
    return {"codes": codes.to(dtype=absmax.dtype), "scales": scales, "mean": mean.reshape(())}


def dequantize_absmax(m, codes, scales, mean, block_size):
    return m.dequantize_absmax(codes, scales, mean, block_size=block_size)


def bits(m):
    configs = [(False, 64, 256), (True, 64, 256), (True, 128, 64), (False, 32, 256)]
    return [float(m.bits_per_parameter(d, block_size=b, dq_block_size=q)) for d, b, q in configs]


def qlora_forward(m, weight, bias, lora_B, x, r, alpha, double_quant):
    import torch

    base = torch.nn.Linear(weight.shape[1], weight.shape[0]).to(x.device)
    with torch.no_grad():
        base.weight.copy_(weight)
        base.bias.copy_(bias)
    layer = m.QLoRALinear(base, r=r, alpha=alpha, block_size=32, double_quant=double_quant)
    with torch.no_grad():
        layer.lora_A.copy_(torch.linspace(-0.3, 0.3, r * weight.shape[1]).view(r, -1))
        layer.lora_B.copy_(lora_B)
        return layer(x)


def qlora_storage(m, weight):
    import torch

    base = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    with torch.no_grad():
        base.weight.copy_(weight)
    layer = m.QLoRALinear(base, r=2, alpha=2.0)
    trainable = sorted(n for n, p in layer.named_parameters() if p.requires_grad)
    state = [v for k, v in layer.state_dict().items() if k not in ("lora_A", "lora_B")]
    n_bytes = sum(v.numel() * v.element_size() for v in state)
    return {"trainable": trainable, "base_in_4_bits": n_bytes <= weight.numel() * 4.6 / 8 + 16}


def qlora_floats_held(m, weight, x):
    import torch

    base = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    with torch.no_grad():
        base.weight.copy_(weight)
    layer = m.QLoRALinear(base, r=2, alpha=4.0, block_size=32, double_quant=False)
    with torch.no_grad():
        layer(x)  # a copy cached by forward counts too

    def where(t):
        return str(t.device), t.untyped_storage().data_ptr()

    # Float tensors the layer holds outside its state_dict (plain attributes, non-persistent
    # buffers, one level into lists, tuples and dicts), each storage once, LoRA's A and B aside.
    state = [t for t in layer.state_dict(keep_vars=True).values() if isinstance(t, torch.Tensor)]
    seen = {where(t) for t in [*state, layer.lora_A, layer.lora_B]}
    n_bytes, largest = 0, 0
    for module in layer.modules():
        for value in vars(module).values():
            if isinstance(value, dict):
                items = list(value.values())
            else:
                items = list(value) if isinstance(value, list | tuple) else [value]
            for t in items:
                if isinstance(t, torch.Tensor) and t.is_floating_point() and where(t) not in seen:
                    seen.add(where(t))
                    n_bytes += t.untyped_storage().nbytes()
                    largest = max(largest, t.untyped_storage().nbytes() // t.element_size())
    small = largest < weight.numel() and n_bytes * 8 <= 4.6 * weight.numel()
    return {"no_float_copy_outside_state_dict": small}


def quantize_summary(m, w):
    packed, absmax = m.quantize_nf4(w, block_size=64)
    return {"packed": packed[::997], "absmax": absmax[::61]}


# ---------------------------------------------------------------- inputs (trusted side)


def weight_37x50(seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(37, 50, generator=g) * torch.rand(37, 1, generator=g) * 4
    w[3, 7] = 50.0  # one outlier: only its own block should lose precision
    return {"w": away_from_ties(w, 32), "block_size": 32}


def weight_float16(seed):
    g = torch.Generator().manual_seed(seed)
    return {"w": away_from_ties(torch.randn(3, 10, 33, generator=g).half(), 8), "block_size": 8}


def given_bytes(seed):
    g = torch.Generator().manual_seed(seed)
    packed = torch.randint(0, 256, (200,), generator=g, dtype=torch.uint8)
    return {
        "packed": packed,
        "absmax": torch.rand(25, generator=g) * 5,
        "shape": [5, 77],
        "block_size": 16,
    }


def many_absmax(seed):
    g = torch.Generator().manual_seed(seed)
    return {"absmax": 0.2 + torch.rand(1000, generator=g).square() * 2, "block_size": 256}


def given_absmax_codes(seed):
    g = torch.Generator().manual_seed(seed)
    return {
        "codes": torch.randint(-127, 128, (300,), generator=g, dtype=torch.int8),
        "scales": torch.rand(3, generator=g) + 0.1,
        "mean": torch.tensor(1.7),
        "block_size": 128,
    }


def nothing(seed):
    return {}


def qlora_inputs(seed, double_quant):
    g = torch.Generator().manual_seed(seed)
    weight = away_from_ties(torch.randn(20, 96, generator=g) * 0.2, 32)
    return {
        "weight": weight,
        "bias": torch.randn(20, generator=g),
        "lora_B": torch.randn(20, 3, generator=g) * 0.1,
        "x": torch.randn(2, 7, 96, generator=g),
        "r": 3,
        "alpha": 6.0,
        "double_quant": double_quant,
    }


def qlora_plain(seed):
    return qlora_inputs(seed, False)


def qlora_double(seed):
    return qlora_inputs(seed, True)


def storage_inputs(seed):
    return {"weight": torch.randn(48, 160, generator=torch.Generator().manual_seed(seed))}


def held_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    return {"weight": torch.randn(40, 96, generator=g), "x": torch.randn(3, 96, generator=g)}


def big_weight(seed):
    w = torch.randn(1024, 1024, generator=torch.Generator().manual_seed(seed))
    return {"w": away_from_ties(w, 64)}


def compare_double_quantize(actual, expected, inputs):
    """codes may differ by one where 127 * (absmax - mean) / scale lands on a half."""
    if not isinstance(actual, dict) or set(actual) != {"codes", "scales", "mean"}:
        return f"double_quantize: expected (codes, scales, mean), got {type(actual).__name__}"
    a, e = {k: torch.as_tensor(v) for k, v in actual.items()}, expected
    if a["codes"].shape != e["codes"].shape or (a["codes"] - e["codes"]).abs().max() > 1:
        return "double_quantize: the 8-bit codes differ from round(127 * (absmax - mean) / scale)"
    for key in ("scales", "mean"):
        e_key = torch.as_tensor(e[key])
        if a[key].shape != e_key.shape or not torch.allclose(a[key], e_key, rtol=1e-5, atol=1e-6):
            return f"double_quantize: {key} differs from the expected values"
    return None


CASES = [
    Case("the NF4 values", call=table, inputs=nothing, points=1, rtol=0, atol=1e-5),
    Case(
        "quantize a (37, 50) weight with an outlier, blocks of 32",
        call=quantize,
        inputs=weight_37x50,
        points=2,
        seed=11,
        rtol=0,
        atol=0,
    ),
    Case(
        "dequantize 200 given bytes to (5, 77), blocks of 16",
        call=dequantize,
        inputs=given_bytes,
        points=2,
        seed=12,
        rtol=1e-5,
        atol=1e-5,
    ),
    Case(
        "round trip of a (3, 10, 33) float16 weight, blocks of 8",
        call=round_trip,
        inputs=weight_float16,
        points=1,
        seed=13,
        rtol=1e-5,
        atol=1e-5,
    ),
    Case(
        "double quantisation of 1000 constants",
        call=double_quantize,
        inputs=many_absmax,
        points=1,
        seed=14,
        compare=compare_double_quantize,
    ),
    Case(
        "restore constants from given 8-bit codes",
        call=dequantize_absmax,
        inputs=given_absmax_codes,
        points=1,
        seed=15,
        rtol=1e-5,
        atol=1e-5,
    ),
    Case("bits per parameter, four layouts", call=bits, inputs=nothing, points=1),
    Case(
        "QLoRALinear(96 -> 20), r=3, alpha=6, lora_B set",
        call=qlora_forward,
        inputs=qlora_plain,
        points=2,
        seed=16,
        rtol=1e-4,
        atol=1e-4,
    ),
    Case(
        "QLoRALinear with double quantisation",
        call=qlora_forward,
        inputs=qlora_double,
        points=1,
        seed=17,
        rtol=1e-4,
        atol=1e-4,
    ),
    Case(
        "QLoRALinear trains only its adapters and stores the base in 4 bits",
        call=qlora_storage,
        inputs=storage_inputs,
        points=1,
        seed=18,
    ),
    Case(
        "QLoRALinear keeps no float copy of the base outside its state_dict",
        call=qlora_floats_held,
        inputs=held_inputs,
        points=1,
        seed=20,
    ),
    Case(
        "quantize a (1024, 1024) weight (speed)",
        call=quantize_summary,
        inputs=big_weight,
        points=1,
        seed=19,
        rtol=0,
        atol=0,
        speed_ratio=5.0,
        speed_points=1,
    ),
]
