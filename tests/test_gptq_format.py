import pytest
import torch

from quantkit.formats.gptq.packing import pack, packed_nbytes, packed_shapes, unpack
from quantkit.quantize.rtn import quantize_rtn
from quantkit.scheme import QuantizedWeight

BITS = (2, 3, 4, 8)


def _as_uint32(t: torch.Tensor) -> list[int]:
    return [int(v) & 0xFFFFFFFF for v in t.flatten().tolist()]


def _bitstream_words(values: list[int], bits: int) -> list[int]:
    """Spec of the layout, one value after another in a little-endian bit stream cut into 32-bit words."""
    stream = sum(v << (bits * k) for k, v in enumerate(values))
    n_words = len(values) * bits // 32
    return [(stream >> (32 * j)) & 0xFFFFFFFF for j in range(n_words)]


def _assert_same(a: QuantizedWeight, b: QuantizedWeight):
    assert torch.equal(a.codes, b.codes)
    assert torch.equal(a.zeros, b.zeros)
    assert torch.equal(a.scales, b.scales)
    assert torch.equal(a.g_idx, b.g_idx)
    assert (a.bits, a.group_size, a.sym) == (b.bits, b.group_size, b.sym)
    assert torch.equal(a.dequantize(), b.dequantize())


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("sym", [True, False])
@pytest.mark.parametrize("group_size", [32, -1])
def test_round_trip(bits, sym, group_size):
    w = torch.randn(96, 160, generator=torch.Generator().manual_seed(bits))
    qw = quantize_rtn(w, bits, group_size, sym)
    tensors = pack(qw)
    for name, (shape, dtype) in packed_shapes(96, 160, bits, group_size).items():
        assert tuple(tensors[name].shape) == shape and tensors[name].dtype == dtype, name
    _assert_same(unpack(tensors, bits, group_size, sym), qw)


@pytest.mark.parametrize("bits", BITS)
def test_asymmetric_zero_point_zero_round_trips(bits):
    # A group without negative values would have zero point 0, which the file's zero - 1 cannot hold
    # for loaders that add 1 back without wrapping: the quantizer keeps zero >= 1 instead.
    w = torch.randn(32, 64).abs()
    qw = quantize_rtn(w, bits, 32, sym=False)
    assert (qw.zeros >= 1).all()
    tensors = pack(qw)
    assert 0xFFFFFFFF not in set(_as_uint32(tensors["qzeros"]))
    _assert_same(unpack(tensors, bits, 32, sym=False), qw)
    step = qw.scales[qw.g_idx.long()].T
    assert ((qw.dequantize() - w).abs() <= step * 0.5 + 1e-6).all()
    # a file written by another tool with a stored all-ones (zero 0) still reads back exactly
    other = QuantizedWeight(qw.codes, qw.scales, torch.zeros_like(qw.zeros), qw.g_idx, bits, 32, sym=False)
    _assert_same(unpack(pack(other), bits, 32, sym=False), other)


@pytest.mark.parametrize("bits", BITS)
def test_round_trip_act_order_g_idx(bits):
    gen = torch.Generator().manual_seed(1)
    qw = quantize_rtn(torch.randn(64, 128, generator=gen), bits, 32, sym=False)
    perm = torch.randperm(128, generator=gen)
    qw.g_idx = qw.g_idx[perm].contiguous()  # any group assignment must survive the round trip
    _assert_same(unpack(pack(qw), bits, 32, sym=False), qw)


@pytest.mark.parametrize("bits", BITS)
def test_layout_matches_the_bitstream_spec(bits):
    gen = torch.Generator().manual_seed(bits)
    qw = quantize_rtn(torch.randn(64, 64, generator=gen), bits, 32, sym=False)
    tensors = pack(qw)
    for col in (0, 17, 63):  # qweight: packed along the input dimension, per output column
        assert _as_uint32(tensors["qweight"][:, col]) == _bitstream_words(qw.codes[col].tolist(), bits)
    stored = ((qw.zeros.long() - 1) & (2**bits - 1)).tolist()
    for group in range(2):  # qzeros: zero - 1, packed along the output dimension
        assert _as_uint32(tensors["qzeros"][group]) == _bitstream_words(stored[group], bits)


def test_hand_computed_4bit_positions():
    codes = torch.zeros(8, 16, dtype=torch.int32)  # [out, in]
    codes[0, 0] = 0x1  # row 0 of word 0 -> bits 0..3
    codes[0, 3] = 0xA  # row 3 of word 0 -> bits 12..15
    codes[1, 7] = 0xF  # row 7 of word 0 -> bits 28..31 (the sign bit of the int32)
    codes[2, 9] = 0x5  # row 9 -> word 1, bits 4..7
    qw = QuantizedWeight(
        codes, torch.ones(1, 8), torch.full((1, 8), 8, dtype=torch.int32), torch.zeros(16, dtype=torch.int32),
        bits=4, group_size=16, sym=True,
    )
    t = pack(qw)
    assert t["qweight"].shape == (2, 8)
    assert _as_uint32(t["qweight"][:, 0]) == [0xA001, 0]
    assert _as_uint32(t["qweight"][:, 1]) == [0xF0000000, 0]
    assert t["qweight"][0, 1].item() == -(2**28)  # int32 view of 0xF0000000
    assert _as_uint32(t["qweight"][:, 2]) == [0, 0x50]
    assert _as_uint32(t["qzeros"]) == [0x77777777]  # sym 4-bit zero 8, stored as 7
    assert torch.equal(t["scales"], torch.ones(1, 8, dtype=torch.float16))


def test_hand_computed_3bit_straddles():
    codes = torch.zeros(1, 32, dtype=torch.int32)
    codes[0, 9] = 0b111  # bits 27..29 of word 0
    codes[0, 10] = 0b111  # bits 30, 31 of word 0 and bit 0 of word 1
    codes[0, 21] = 0b101  # bit 31 of word 1 (low bit 1) and bits 0, 1 of word 2 (0b10)
    codes[0, 31] = 0b011  # bits 29..31 of word 2
    qw = QuantizedWeight(
        codes.repeat(32, 1), torch.ones(1, 32), torch.full((1, 32), 4, dtype=torch.int32),
        torch.zeros(32, dtype=torch.int32), bits=3, group_size=32, sym=True,
    )
    t = pack(qw)
    assert _as_uint32(t["qweight"][:, 0]) == [0xF8000000, 0x80000001, 0x60000002]
    # sym 3-bit zero 4 is stored as 3 = 0b011 in all 32 slots of the 96-bit stream
    assert _as_uint32(t["qzeros"][0]) == _bitstream_words([3] * 32, 3)
    assert torch.equal(unpack(t, 3, 32).codes, qw.codes)


@pytest.mark.parametrize("bits, word", [(2, 0x55555555), (4, 0x77777777), (8, 0x7F7F7F7F)])
def test_symmetric_qzeros_words(bits, word):
    qw = quantize_rtn(torch.randn(32, 64), bits, 32, sym=True)
    assert set(_as_uint32(pack(qw)["qzeros"])) == {word}


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("group_size", [32, 128, -1])
def test_packed_nbytes(bits, group_size):
    qw = quantize_rtn(torch.randn(96, 256), bits, group_size)
    actual = sum(t.numel() * t.element_size() for t in pack(qw).values())
    assert packed_nbytes(96, 256, bits, group_size) == actual


def test_packed_nbytes_by_formula():
    # 4-bit g128 [1536, 2560]: qweight 2560/8*1536 + qzeros 20*1536/8 int32, scales 20*1536 fp16, g_idx 2560 int32
    expected = 4 * (320 * 1536) + 4 * (20 * 192) + 2 * (20 * 1536) + 4 * 2560
    assert packed_nbytes(1536, 2560, 4, 128) == expected


@pytest.mark.parametrize(
    "bits, out_features, in_features, group_size, match",
    [
        (3, 96, 48, 16, "in_features.*multiple of 32"),  # 3-bit runs are 32 rows (3 words)
        (3, 48, 64, 32, "out_features.*multiple of 32"),
        (4, 12, 64, 32, "out_features.*multiple of 8"),
        (2, 32, 40, 8, "in_features.*multiple of 16"),
        (8, 32, 66, -1, "in_features.*multiple of 4"),
        (4, 32, 160, 64, "group_size"),
    ],
)
def test_unpackable_shapes_raise(bits, out_features, in_features, group_size, match):
    with pytest.raises(ValueError, match=match):
        packed_nbytes(out_features, in_features, bits, group_size)
    if in_features % group_size == 0 or group_size == -1:
        qw = quantize_rtn(torch.randn(out_features, in_features), bits, group_size)
        with pytest.raises(ValueError, match=match):
            pack(qw)


def test_invalid_contents_raise():
    qw = quantize_rtn(torch.randn(32, 64), 4, 32)
    bad_scale = QuantizedWeight(qw.codes, qw.scales + 1e-4, qw.zeros, qw.g_idx, 4, 32)
    with pytest.raises(ValueError, match="fp16"):
        pack(bad_scale)
    bad_codes = QuantizedWeight(qw.codes + 16, qw.scales, qw.zeros, qw.g_idx, 4, 32)
    with pytest.raises(ValueError, match="codes"):
        pack(bad_codes)
