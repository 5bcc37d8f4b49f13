"""Specs for qlora: `pytest exercises/qlora` (`--impl=solutions`: the reference)."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from graders.checks import assert_close, describe, fail

# NormalFloat4 as published (the paper's Appendix E; bitsandbytes' NF4 code), to compare with.
PAPER_NF4 = [
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
TABLE = torch.tensor(PAPER_NF4, dtype=torch.float64)
HALF_GAP = (TABLE[1:] - TABLE[:-1]).max().item() / 2  # 0.152: the worst rounding, times absmax
# w / absmax is rounded once in float32 (about 6e-8) before the nearest value is chosen.
EPS = 1e-6

shapes = st.one_of(
    st.tuples(st.integers(1, 70)),
    st.tuples(st.integers(1, 9), st.integers(1, 40)),
    st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 20)),
)
block_sizes = st.sampled_from([2, 8, 32, 64])


def weights(shape, seed, device, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(*shape, generator=g) * scale
    w[torch.rand(*shape, generator=g) < 0.1] = 0.0  # a few exact zeros
    return w.to(device)


def blocks_of(w, block_size):
    """w flattened, zero-padded to whole blocks: (n_blocks, block_size) float64 on the CPU."""
    flat = w.detach().reshape(-1).double().cpu()
    return F.pad(flat, (0, (-flat.numel()) % block_size)).view(-1, block_size)


def unpack(packed):
    """The spec's own reading of the documented layout: first code in the high nibble."""
    p = packed.cpu().long()
    return torch.stack([p >> 4, p & 15], dim=-1).view(-1)


def round_trip(impl, w, block_size):
    packed, absmax = impl.quantize_nf4(w, block_size=block_size)
    return impl.dequantize_nf4(packed, absmax, w.shape, block_size=block_size), packed, absmax


# ---------------------------------------------------------------- the NF4 values


def test_nf4_values_match_the_paper(impl):
    values = impl.nf4_values()
    if not isinstance(values, torch.Tensor) or values.shape != (16,):
        fail(f"nf4_values() should return a (16,) tensor, got {values!r}")
    assert_close(
        values.double().cpu(),
        TABLE,
        rtol=0,
        atol=5e-5,
        what="nf4_values() against the paper's NF4 table (to 4 decimals)",
    )


def test_nf4_values_have_an_exact_zero_and_eight_positives(impl):
    values = impl.nf4_values().double().cpu()
    if (values == 0).sum() != 1 or values[7] != 0:
        fail(f"nf4_values() should hold exactly one 0, at index 7; got {values.tolist()}")
    if (values > 0).sum() != 8 or (values < 0).sum() != 7:
        fail(
            "nf4_values(): 8 positive quantiles and 7 negative ones (plus zero) make 16 values; "
            f"got {(values > 0).sum().item()} positive, {(values < 0).sum().item()} negative"
        )
    if not (values[1:] > values[:-1]).all() or values[0] != -1 or values[-1] != 1:
        fail(f"nf4_values() should be sorted, from exactly -1 to exactly 1; got {values.tolist()}")


# ---------------------------------------------------------------- quantize / dequantize


@given(shape=shapes, block_size=block_sizes, seed=st.integers(0, 2**16))
def test_quantize_shapes_and_dtypes(impl, device, shape, block_size, seed):
    w = weights(shape, seed, device)
    packed, absmax = impl.quantize_nf4(w, block_size=block_size)
    n_blocks = math.ceil(w.numel() / block_size)
    what = f"quantize_nf4({describe(w=w)}, block_size={block_size})"
    if packed.dtype != torch.uint8 or packed.shape != (n_blocks * block_size // 2,):
        fail(
            f"{what}: packed should be ({n_blocks * block_size // 2},) uint8 "
            f"({n_blocks} blocks, two codes per byte); got {tuple(packed.shape)} {packed.dtype}"
        )
    if absmax.dtype != torch.float32 or absmax.shape != (n_blocks,):
        fail(
            f"{what}: absmax should be ({n_blocks},) float32, one per block; "
            f"got {tuple(absmax.shape)} {absmax.dtype}"
        )
    out = impl.dequantize_nf4(packed, absmax, w.shape, block_size=block_size)
    if out.shape != w.shape or out.dtype != torch.float32 or out.device != w.device:
        fail(
            f"dequantize_nf4 after {what} should give {tuple(w.shape)} float32 on {w.device}; "
            f"got {tuple(out.shape)} {out.dtype} on {out.device}"
        )


@given(shape=shapes, block_size=block_sizes, seed=st.integers(0, 2**16))
def test_absmax_is_taken_per_block(impl, device, shape, block_size, seed):
    w = weights(shape, seed, device, scale=10.0)
    _, absmax = impl.quantize_nf4(w, block_size=block_size)
    expected = blocks_of(w, block_size).abs().amax(dim=1).float()
    assert_close(
        absmax.cpu(),
        expected,
        rtol=0,
        atol=0,
        what=f"absmax of quantize_nf4({describe(w=w)}, block_size={block_size}) "
        "(the largest |w| of each block of consecutive weights)",
    )


@given(shape=shapes, block_size=block_sizes, seed=st.integers(0, 2**16))
def test_round_trip_error_is_bounded_per_block(impl, device, shape, block_size, seed):
    w = weights(shape, seed, device, scale=3.0)
    out, _, _ = round_trip(impl, w, block_size)
    err = blocks_of(w - out.to(w.dtype), block_size).abs()
    absmax = blocks_of(w, block_size).abs().amax(dim=1, keepdim=True)
    bound = absmax * (HALF_GAP + EPS)
    if (err > bound).any():
        b, i = (int(t) for t in (err - bound).argmax().item().__divmod__(block_size))
        fail(
            f"dequantize_nf4(quantize_nf4({describe(w=w)}, block_size={block_size})): in block "
            f"{b}, weight {i} = {blocks_of(w, block_size)[b, i].item():.6g} came back "
            f"{blocks_of(out, block_size)[b, i].item():.6g}; the error may be at most half the "
            f"largest gap between NF4 values times the block's absmax "
            f"({bound[b, 0].item():.6g})"
        )


@given(shape=shapes, block_size=block_sizes, seed=st.integers(0, 2**16))
def test_round_trip_picks_the_nearest_value(impl, device, shape, block_size, seed):
    w = weights(shape, seed, device)
    out, _, _ = round_trip(impl, w, block_size)
    absmax = blocks_of(w, block_size).abs().amax(dim=1, keepdim=True)
    scale = torch.where(absmax > 0, absmax, torch.ones_like(absmax))
    x = blocks_of(w, block_size) / scale
    got = blocks_of(out, block_size) / scale
    best = (x[..., None] - TABLE).abs().amin(-1)
    if ((x - got).abs() > best + EPS).any():
        b, i = (int(t) for t in ((x - got).abs() - best).argmax().item().__divmod__(block_size))
        fail(
            f"quantize_nf4({describe(w=w)}, block_size={block_size}): w / absmax = "
            f"{x[b, i].item():.6f} in block {b} came back as {got[b, i].item():.6f}, but the "
            f"nearest NF4 value is {TABLE[(x[b, i] - TABLE).abs().argmin()].item():.6f}"
        )


@given(shape=shapes, block_size=block_sizes, seed=st.integers(0, 2**16))
def test_zeros_and_absmax_come_back_exactly(impl, device, shape, block_size, seed):
    w = weights(shape, seed, device)
    out, _, _ = round_trip(impl, w, block_size)
    blocks, back = blocks_of(w, block_size), blocks_of(out, block_size)
    absmax = blocks.abs().amax(dim=1, keepdim=True)
    exact = (blocks == 0) | (blocks.abs() == absmax)
    if (back[exact] != blocks[exact]).any():
        k = (back[exact] != blocks[exact]).nonzero()[0, 0]
        fail(
            f"dequantize_nf4(quantize_nf4({describe(w=w)}, block_size={block_size})): "
            f"{blocks[exact][k].item():.6g} (a zero, or its block's ±absmax) came back as "
            f"{back[exact][k].item():.6g}; NF4 holds 0 and ±1 exactly"
        )


@pytest.mark.parametrize("block_size", [4, 64])
def test_two_codes_per_byte_first_in_the_high_nibble(impl, device, block_size):
    # Weights that are NF4 values already (each block holds ±1, so absmax = 1): codes are known.
    g = torch.Generator().manual_seed(block_size)
    codes = torch.randint(0, 16, (3 * block_size,), generator=g)
    codes[::block_size] = 15
    w = TABLE.float()[codes].view(3, block_size).to(device)
    packed, _ = impl.quantize_nf4(w, block_size=block_size)
    got = unpack(packed)
    if not torch.equal(got, codes):
        fail(
            f"quantize_nf4 on weights that are NF4 values (codes {codes[:6].tolist()}...): the "
            f"bytes read as {got[:6].tolist()}... with the first code of each pair in the high "
            f"nibble (byte = code[2i] << 4 | code[2i+1]); first bytes {packed[:3].tolist()}"
        )


def test_dequantize_reads_given_bytes(impl, device):
    g = torch.Generator().manual_seed(3)
    packed = torch.randint(0, 256, (48,), generator=g, dtype=torch.uint8)
    absmax = torch.rand(3, generator=g) * 4
    out = impl.dequantize_nf4(packed.to(device), absmax.to(device), (2, 45), block_size=32)
    expected = (TABLE[unpack(packed)].view(3, 32) * absmax.double()[:, None]).view(-1)[:90]
    assert_close(
        out.double().cpu(),
        expected.view(2, 45),
        rtol=1e-6,
        atol=1e-6,
        what="dequantize_nf4(packed (48,) random bytes, absmax (3,), shape (2, 45), block_size=32)"
        " (value = NF4[code] * absmax, first code in the high nibble, padding dropped)",
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_dequantize_gives_the_asked_dtype(impl, device, dtype):
    w = weights((4, 30), 5, device)
    packed, absmax = impl.quantize_nf4(w, block_size=16)
    out = impl.dequantize_nf4(packed, absmax, (4, 30), block_size=16, dtype=dtype)
    if out.dtype != dtype or out.shape != (4, 30):
        fail(f"dequantize_nf4(..., dtype={dtype}) gave {tuple(out.shape)} {out.dtype}")
    ref = impl.dequantize_nf4(packed, absmax, (4, 30), block_size=16)
    assert_close(out, ref.to(dtype), what=f"dequantize_nf4(..., dtype={dtype})")


def test_an_all_zero_block_stays_zero(impl, device):
    w = torch.zeros(3, 64, device=device)
    w[1] = torch.linspace(-2, 2, 64)
    out, _, absmax = round_trip(impl, w, 64)
    if not torch.isfinite(out).all() or (out[0] != 0).any() or (out[2] != 0).any():
        fail(
            "quantize_nf4 then dequantize_nf4 on a weight whose blocks 0 and 2 are all zeros: "
            f"those blocks should come back as zeros (absmax {absmax.tolist()}); got "
            f"{out[0, :4].tolist()}... (divide by 1, not by 0, where absmax is 0)"
        )


# ---------------------------------------------------------------- double quantisation


def absmaxes(n, seed, device):
    g = torch.Generator().manual_seed(seed)
    return (0.5 + torch.rand(n, generator=g) * torch.rand(1, generator=g) * 3).to(device)


@given(n=st.integers(1, 700), block_size=st.sampled_from([8, 64, 256]), seed=st.integers(0, 99))
def test_double_quantize_constants(impl, device, n, block_size, seed):
    a = absmaxes(n, seed, device)
    codes, scales, mean = impl.double_quantize(a, block_size=block_size)
    what = f"double_quantize({describe(absmax=a)}, block_size={block_size})"
    n_groups = math.ceil(n / block_size)
    if codes.dtype != torch.int8 or codes.shape != (n,):
        fail(f"{what}: codes should be ({n},) int8; got {tuple(codes.shape)} {codes.dtype}")
    assert_close(
        mean.reshape(()).double().cpu(),
        a.double().mean().cpu(),
        rtol=1e-6,
        atol=0,
        what=f"{what}: mean (of all the constants)",
    )
    centred = F.pad(a.double().cpu() - a.double().mean().cpu(), (0, (-n) % block_size))
    expected = centred.view(n_groups, block_size).abs().amax(1)
    assert_close(
        scales.double().cpu(),
        expected,
        rtol=1e-5,
        atol=1e-6,
        what=f"{what}: scales (each group's largest |absmax - mean|)",
    )


@given(n=st.integers(1, 700), block_size=st.sampled_from([8, 64, 256]), seed=st.integers(0, 99))
def test_double_quantize_round_trip(impl, device, n, block_size, seed):
    a = absmaxes(n, seed, device)
    back = impl.dequantize_absmax(*impl.double_quantize(a, block_size), block_size=block_size)
    centred = F.pad(a.double().cpu() - a.double().mean().cpu(), (0, (-n) % block_size))
    step = centred.view(-1, block_size).abs().amax(1, keepdim=True) / 127
    bound = (step / 2).expand(-1, block_size).reshape(-1)[:n] + 1e-5
    err = (back.double().cpu() - a.double().cpu()).abs()
    if back.shape != a.shape or (err > bound).any():
        i = int((err - bound).argmax()) if back.shape == a.shape else 0
        fail(
            f"dequantize_absmax(*double_quantize({describe(absmax=a)}, {block_size})): "
            f"absmax[{i}] = {a[i].item():.6f} came back {back.flatten()[i].item():.6f}; an 8-bit "
            f"code of the centred constant is off by at most half a step ({bound[i].item():.2e})"
        )


def test_bits_per_parameter(impl):
    cases = [
        ((False,), {}, 4.5),
        ((True,), {}, 4 + 8 / 64 + 32 / (64 * 256)),
        ((False,), {"block_size": 128}, 4.25),
        ((True,), {"block_size": 32, "dq_block_size": 128}, 4 + 8 / 32 + 32 / (32 * 128)),
    ]
    for args, kwargs, expected in cases:
        got = impl.bits_per_parameter(*args, **kwargs)
        if not isinstance(got, int | float) or abs(got - expected) > 1e-9:
            fail(
                f"bits_per_parameter(double_quant={args[0]}, {kwargs or 'defaults'}) should be "
                f"{expected:.6f} (4 bits per code plus each constant's bits shared by the weights "
                f"it scales); got {got!r}"
            )


# ---------------------------------------------------------------- QLoRALinear


def linear(in_features, out_features, bias, seed, device, dtype=torch.float32):
    torch.manual_seed(seed)
    return torch.nn.Linear(in_features, out_features, bias=bias).to(device=device, dtype=dtype)


def expected_base(impl, base, block_size, double_quant):
    packed, absmax = impl.quantize_nf4(base.weight.detach(), block_size)
    if double_quant:
        absmax = impl.dequantize_absmax(*impl.double_quantize(absmax))
    return impl.dequantize_nf4(packed, absmax, base.weight.shape, block_size)


@pytest.mark.parametrize("double_quant", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_qlora_linear_starts_as_the_quantized_base(impl, device, double_quant, bias):
    base = linear(70, 24, bias, 0, device)
    layer = impl.QLoRALinear(base, r=4, alpha=8, block_size=32, double_quant=double_quant)
    x = torch.randn(3, 5, 70, generator=torch.Generator().manual_seed(1)).to(device)
    with torch.no_grad():
        actual = layer(x)
        w = expected_base(impl, base, 32, double_quant)
        expected = F.linear(x, w, base.bias)
    assert_close(
        actual,
        expected,
        rtol=1e-5,
        atol=1e-5,
        what=f"QLoRALinear(nn.Linear(70, 24, bias={bias}), r=4, alpha=8, block_size=32, "
        f"double_quant={double_quant})(x (3, 5, 70)) at initialisation (lora_B = 0), against "
        "F.linear(x, dequantized base weight, bias)",
    )


@pytest.mark.parametrize("r, alpha", [(2, 2.0), (4, 16.0)])
def test_qlora_linear_adds_the_scaled_lora_path(impl, device, r, alpha):
    base = linear(40, 12, True, 2, device, torch.float64)
    layer = impl.QLoRALinear(base, r=r, alpha=alpha, block_size=64, double_quant=False)
    g = torch.Generator().manual_seed(3)
    shapes = {"lora_A": (r, 40), "lora_B": (12, r)}
    for name, shape in shapes.items():
        p = getattr(layer, name, None)
        if not isinstance(p, torch.nn.Parameter) or p.shape != shape:
            fail(f"QLoRALinear(r={r}): {name} should be an nn.Parameter of shape {shape}; got {p}")
    with torch.no_grad():
        layer.lora_B.copy_(torch.randn(12, r, generator=g, dtype=torch.float64))
    x = torch.randn(6, 40, generator=g, dtype=torch.float64).to(device)
    with torch.no_grad():
        w = expected_base(impl, base, 64, False).double()
        expected = F.linear(x, w, base.bias) + (alpha / r) * x @ layer.lora_A.T @ layer.lora_B.T
        actual = layer(x)
    assert_close(
        actual,
        expected,
        rtol=1e-9,
        atol=1e-9,
        what=f"QLoRALinear(nn.Linear(40, 12), r={r}, alpha={alpha}) float64 with lora_B set "
        "(expected x W_nf4^T + b + (alpha / r) x A^T B^T)",
    )


def test_qlora_linear_trains_only_the_adapters(impl, device):
    base = linear(32, 16, True, 4, device)
    layer = impl.QLoRALinear(base, r=2, alpha=4)
    trainable = sorted(n for n, p in layer.named_parameters() if p.requires_grad)
    if trainable != ["lora_A", "lora_B"]:
        fail(f"QLoRALinear: the trainable parameters should be lora_A and lora_B; got {trainable}")
    x = torch.randn(4, 32, device=device, requires_grad=True)
    layer(x).square().sum().backward()
    if layer.lora_B.grad is None or not layer.lora_B.grad.abs().sum() > 0:
        fail("QLoRALinear: lora_B gets no gradient (keep the LoRA path in torch operations)")
    if x.grad is None or not x.grad.abs().sum() > 0:
        fail("QLoRALinear: no gradient reaches the input through the frozen base")
    if base.weight.grad is not None:
        fail("QLoRALinear: the original nn.Linear's weight received a gradient; keep none of it")


def storage_of(t):
    """(a key shared by tensors that share memory, the bytes of that memory)."""
    try:
        storage = t.untyped_storage()
        return (str(t.device), storage.data_ptr()), storage.nbytes()
    except (RuntimeError, NotImplementedError):  # sparse and other storage-less tensors
        return ("id", id(t)), t.numel() * t.element_size()


def held_tensors(layer, skip=()):
    """Every tensor a module holds, once per storage, whatever its internals are called.

    Walks the module and its submodules: parameters, buffers (persistent or not), plain
    attributes, and tensors or modules inside a list, tuple or dict held there (one level).
    Tensors sharing memory with one in `skip` are left out. -> [(path, kind, tensor, bytes)].
    """
    seen = {storage_of(t)[0] for t in skip if isinstance(t, torch.Tensor)}
    todo = list(layer.named_modules())
    visited = {id(m) for _, m in todo}
    found = []
    while todo:
        prefix, module = todo.pop(0)
        for key, value in vars(module).items():
            if key in ("_parameters", "_buffers"):
                kind = "a parameter" if key == "_parameters" else "a buffer"
                entries = [(name, kind, v) for name, v in value.items()]
            elif key == "_modules":
                continue  # named_modules() has them
            elif isinstance(value, list | tuple):
                entries = [(f"{key}[{i}]", "a plain attribute", v) for i, v in enumerate(value)]
            elif isinstance(value, dict):
                entries = [(f"{key}[{k!r}]", "a plain attribute", v) for k, v in value.items()]
            else:
                entries = [(key, "a plain attribute", value)]
            for name, kind, v in entries:
                path = f"{prefix}.{name}" if prefix else name
                if isinstance(v, torch.Tensor):
                    where, n_bytes = storage_of(v)
                    if where not in seen:
                        seen.add(where)
                        found.append((path, kind, v, n_bytes))
                elif isinstance(v, torch.nn.Module) and id(v) not in visited:
                    for sub, m in v.named_modules(prefix=path):
                        if id(m) not in visited:
                            visited.add(id(m))
                            todo.append((sub, m))
    return found


def test_qlora_linear_stores_the_base_in_4_bits(impl, device):
    base = linear(128, 64, True, 5, device)
    layer = impl.QLoRALinear(base, r=4, alpha=8)
    if any(p is base.weight or p is base.bias for p in layer.parameters()):
        fail("QLoRALinear keeps the original nn.Linear's parameters; store the NF4 base only")
    with torch.no_grad():
        layer(torch.randn(2, 128, device=device))  # what forward leaves behind counts too
    # Everything the layer holds, not only its state_dict: a plain attribute (self._w = ...) or a
    # non-persistent buffer takes memory just the same. LoRA's own A and B are not the base.
    lora = [getattr(layer, name, None) for name in ("lora_A", "lora_B")]
    held = held_tensors(layer, skip=lora)
    what = "QLoRALinear(nn.Linear(128, 64)), after one forward pass,"
    for path, kind, t, n_bytes in held:
        if (t.is_floating_point() or t.is_complex()) and n_bytes // t.element_size() >= 128 * 64:
            fail(
                f"{what} holds `{path}` ({kind}, {tuple(t.shape)} {t.dtype}, {n_bytes} bytes): "
                f"a float tensor with as many entries as the (64, 128) weight is a full-precision "
                f"copy of the base, whether or not it is in the state_dict. Keep only the packed "
                f"4-bit codes, their constants and the bias; dequantise inside forward and do not "
                f"store the result"
            )
    n_bytes = sum(b for _, _, _, b in held)
    limit = 128 * 64 * 4.6 / 8 + 64 * 4 + 16  # NF4 codes, their constants, the bias
    if n_bytes > limit:
        listing = [(path, kind, tuple(t.shape), str(t.dtype), b) for path, kind, t, b in held]
        fail(
            f"{what} holds {n_bytes} bytes besides lora_A and lora_B "
            f"({n_bytes * 8 / (128 * 64):.2f} bits per weight; tensors {listing}); at about "
            f"4.5 bits per weight the base should take at most {limit:.0f}: keep no float weight, "
            f"in the state_dict or in a plain attribute"
        )


def test_swap_in_qlora_fine_tunes_a_small_model(impl, device):
    torch.manual_seed(6)
    model = torch.nn.Sequential(
        torch.nn.Linear(16, 64), torch.nn.GELU(), torch.nn.Linear(64, 4)
    ).to(device)
    x = torch.randn(64, 16, device=device)
    y = torch.randn(64, 4, device=device)
    before = model(x).detach()
    impl.swap_in_qlora(model, r=4, alpha=8)
    with torch.no_grad():
        start = F.mse_loss(model(x), y).item()
        assert_close(
            model(x),
            before,
            rtol=0,
            atol=0.3,
            what="a 2-layer MLP after swap_in_qlora, against the MLP before (NF4 noise only)",
        )
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(trainable, lr=3e-2)
    for _ in range(25):
        opt.zero_grad()
        F.mse_loss(model(x), y).backward()
        opt.step()
    end = F.mse_loss(model(x), y).item()
    if not end < 0.8 * start:
        fail(
            f"a 2-layer MLP with QLoRALinear layers (r=4), 25 Adam steps on the adapters: the loss "
            f"went from {start:.4f} to {end:.4f}; it should drop by at least 20%"
        )
