"""An independent decoder of the numbers: every quantized tensor run through onnxruntime's `MatMulNBits`.

quantkit's own round trip (pack, then unpack) cannot catch a packing bug that both halves share, e.g.
codes written highest-bits-first and read back the same way. Here the GPTQ tensors are decoded again
from the raw file bytes by a separate reader that follows only the documented layout
(shared/notes/formats.md: values form a little-endian bit stream cut into int32 words, codes along the
input dimension in `qweight`, zero-1 along the output dimension in `qzeros`), re-packed into
onnxruntime's `MatMulNBits` layout (com.microsoft domain; `B` uint8 [N, K/block, block*bits/8], lowest
bits first; `scales` [N, K/block]; `zero_points` uint8 [N, ceil(K/block*bits/8)], packed the same way),
and onnxruntime's CPU kernel computes `x @ W.T` on random inputs. That must equal the matmul with the
weight `quantkit.load` dequantizes (its loader, `dequantized_state_dict`) within the tolerance below.

Supported by onnxruntime 1.32 on CPU: bits 2, 4, 8 (its kernel refuses 3 bits: "Only 2b, 4b and 8b
quantization is supported for MatMulNBits op"), blocks of a power of two >= 16. A GPTQ group of g
columns becomes g/block blocks with the group's scale and zero repeated; act-order (a g_idx that is not
i // g) becomes a Gather that permutes the input columns so that each group is contiguous. Tensors that
cannot be expressed (3 bits, a group with no power-of-two block of at least 16, unequal act-order groups)
are reported as not checkable, never as passed.

Tolerance. Codes minus zero are small integers and scales are fp16 (11-bit significands), so every
dequantized weight (code - zero) * scale is exact in fp32, in quantkit's loader and in onnxruntime
alike; the only differences come from onnxruntime's fp32 accumulation (accuracy_level 1 = fp32
compute) and possibly one rounding in its dequantization. For a dot product of K terms the standard
worst-case bound is gamma_K = K*u/(1 - K*u) (u = 2**-24) times sum_i |x_i * w_i|; we allow
(K + 2) * u * (|x| @ |W|.T) per output against a float64 reference, which is rigorous and still about
10**5 times smaller than the error of one wrong code (a scale step times |x_i|).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import VariantCorrupt
from ...verdicts import Check, failed, from_offenders, skipped
from .integrity import PackedModule, VariantFiles
from .reader import PACKED, dequantized_state_dict, read_module

ORT_BITS = (2, 4, 8)
U32 = 2.0 ** -24
_MAX_BLOCK = 128  # onnxruntime's MLAS kernels are specialised for blocks 16..256
_BATCH_BYTES = 256 * 2**20  # packed weight bytes per onnxruntime session


def stream_values(words: np.ndarray, bits: int) -> np.ndarray:
    """Rows of int32 words, each row one little-endian bit stream -> [rows, count] uint8 values.

    Value k of a row occupies bits [bits*k, bits*k + bits) of its stream (any width, 3 included)."""
    rows = np.ascontiguousarray(words.astype("<i4")).view(np.uint8).reshape(words.shape[0], -1)
    bitarr = np.unpackbits(rows, axis=1, bitorder="little")
    count = bitarr.shape[1] // bits
    bitarr = bitarr[:, : count * bits].reshape(words.shape[0], count, bits).astype(np.uint16)
    return (bitarr << np.arange(bits, dtype=np.uint16)).sum(axis=2).astype(np.uint8)


def pack_values(values: np.ndarray, bits: int) -> np.ndarray:
    """[rows, count] values -> [rows, ceil(count*bits/8)] uint8, lowest bits first (MatMulNBits)."""
    rows, count = values.shape
    bitarr = ((values[:, :, None].astype(np.uint16) >> np.arange(bits, dtype=np.uint16)) & 1).astype(np.uint8)
    return np.packbits(bitarr.reshape(rows, count * bits), axis=1, bitorder="little")


def decode_module(v: VariantFiles, pm: PackedModule) -> dict:
    """Codes [N, K], zeros [G, N] (the real zero: stored + 1, mod 2**bits as quantkit writes it),
    scales [G, N] float32 and g_idx [K], straight from the file bytes."""
    b = pm.bits
    codes = stream_values(v.read_np(f"{pm.module}.qweight").T, b)[:, : pm.in_features]  # [N, K]
    stored = stream_values(v.read_np(f"{pm.module}.qzeros"), b)[:, : pm.out_features]  # [G, N]
    zeros = ((stored.astype(np.int64) + 1) % (1 << b)).astype(np.uint8)
    scales = v.read_np(f"{pm.module}.scales").astype(np.float32)
    g_idx = v.read_np(f"{pm.module}.g_idx").astype(np.int64)
    return {"codes": codes, "zeros": zeros, "scales": scales, "g_idx": g_idx}


@dataclass
class NBitsOperand:
    """One quantized tensor in MatMulNBits form."""
    module: str
    K: int
    N: int
    bits: int
    block: int
    B: np.ndarray
    scales: np.ndarray
    zero_points: np.ndarray
    perm: np.ndarray | None  # input column order (act-order), None when groups are contiguous


def _block_for(group: int) -> int | None:
    p = _MAX_BLOCK
    while p >= 16:
        if group % p == 0:
            return p
        p //= 2
    return None


def to_matmulnbits(module: str, dec: dict, bits: int) -> tuple[NBitsOperand | None, str]:
    """The MatMulNBits operands of one decoded tensor, or None and why it cannot be expressed."""
    if bits not in ORT_BITS:
        return None, f"{bits}-bit: MatMulNBits (onnxruntime 1.32 CPU) takes 2, 4 and 8 bits"
    codes, zeros, scales, g_idx = dec["codes"], dec["zeros"], dec["scales"], dec["g_idx"]
    N, K = codes.shape
    G = scales.shape[0]
    counts = np.bincount(g_idx, minlength=G)
    if G == 0 or K % G or not np.all(counts == K // G):
        return None, f"groups of unequal size in g_idx (act-order with {G} groups over {K} columns)"
    g = K // G
    block = _block_for(g)
    if block is None:
        return None, f"group size {g} has no power-of-two block >= 16 that divides it"
    perm = None
    if not np.array_equal(g_idx, np.arange(K) // g):
        perm = np.argsort(g_idx, kind="stable")
        codes = codes[:, perm]
    reps = g // block
    nb = K // block
    blk_scales = np.repeat(scales.T, reps, axis=1)  # [N, nb]
    blk_zeros = np.repeat(zeros.T, reps, axis=1)  # [N, nb]
    B = pack_values(codes, bits).reshape(N, nb, block * bits // 8)
    zp = pack_values(blk_zeros, bits)  # [N, ceil(nb * bits / 8)]
    return NBitsOperand(module, K, N, bits, block, B, np.ascontiguousarray(blk_scales), zp, perm), ""


def _session(ops: list[NBitsOperand]):
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    nodes, inputs, outputs, inits = [], [], [], []
    for i, op in enumerate(ops):
        a = f"A{i}"
        inputs.append(helper.make_tensor_value_info(a, TensorProto.FLOAT, ["m", op.K]))
        if op.perm is not None:
            inits.append(numpy_helper.from_array(op.perm.astype(np.int64), f"perm{i}"))
            nodes.append(helper.make_node("Gather", [a, f"perm{i}"], [f"Ap{i}"], axis=1))
            a = f"Ap{i}"
        inits += [numpy_helper.from_array(op.B, f"B{i}"), numpy_helper.from_array(op.scales, f"S{i}"),
                  numpy_helper.from_array(op.zero_points, f"Z{i}")]
        nodes.append(helper.make_node("MatMulNBits", [a, f"B{i}", f"S{i}", f"Z{i}"], [f"Y{i}"],
                                      domain="com.microsoft", K=op.K, N=op.N, bits=op.bits,
                                      block_size=op.block, accuracy_level=1))
        outputs.append(helper.make_tensor_value_info(f"Y{i}", TensorProto.FLOAT, ["m", op.N]))
    graph = helper.make_graph(nodes, "quantkit_matmulnbits_check", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def loader_weights(v: VariantFiles, modules: list[str], max_bytes: int = 512 * 2**20):
    """module -> fp32 weight [out, in] exactly as quantkit.load dequantizes it. Small variants go
    through the loader function itself (`dequantized_state_dict`); larger ones module by module
    through the same calls it makes (module_scheme + unpack + dequantize), to bound memory."""
    total = sum(r.nbytes for r in v.tensors.values())
    if total <= max_bytes:
        state = dequantized_state_dict(v.path)
        for m in modules:
            yield m, state[f"{m}.weight"]
        return
    for m in modules:
        tensors = {p: v.read(f"{m}.{p}") for p in PACKED}
        yield m, read_module(v.path, v.qcfg, m, tensors).dequantize()


def cross_check(v: VariantFiles, rows: int = 4, seed: int = 0,
                loader_max_bytes: int = 512 * 2**20) -> tuple[list[Check], dict]:
    """onnxruntime vs quantkit.load for every quantized tensor. Returns the checks and the numbers."""
    source = "onnxruntime 1.32 com.microsoft MatMulNBits (contrib_ops/cpu/quantization/matmul_nbits.cc), CPU"
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as e:
        return [skipped("onnxruntime.cross_check", f"onnx/onnxruntime not installed ({e})", source)], {}
    modules = {m: pm for m, pm in v.packed_modules().items() if not pm.problems and pm.bits}
    not_checkable, ops = [], []
    for m, pm in modules.items():
        op, why = to_matmulnbits(m, decode_module(v, pm), pm.bits)
        if op is None:
            not_checkable.append(f"{m}: {why}")
        else:
            ops.append(op)
    rng = np.random.default_rng(seed)
    try:
        weights = dict(loader_weights(v, [op.module for op in ops], loader_max_bytes)) if ops else {}
    except VariantCorrupt as e:  # quantkit.load cannot read the variant (e.g. config.json edited to other bits)
        return [failed("onnxruntime.cross_check", [str(e)], f"quantkit.load cannot read the variant: {e}", source)], {}
    mismatches, errs, ratios, per_bits = [], [], [], {}
    batch: list[NBitsOperand] = []

    def flush():
        if not batch:
            return
        sess = _session(batch)
        feeds = {f"A{i}": rng.standard_normal((rows, op.K)).astype(np.float32) for i, op in enumerate(batch)}
        outs = sess.run(None, feeds)
        for i, op in enumerate(batch):
            x = feeds[f"A{i}"].astype(np.float64)
            w = weights[op.module].double().numpy()
            ref = x @ w.T
            bound = (op.K + 2) * U32 * (np.abs(x) @ np.abs(w).T) + 1e-30
            err = np.abs(outs[i].astype(np.float64) - ref)
            if not (np.isfinite(err).all() and np.isfinite(ref).all()):
                mismatches.append(f"{op.module}: non-finite outputs (onnxruntime or quantkit.load); "
                                  "see integrity.finite_scales")
                continue
            ratio = float((err / bound).max())
            errs.append(float(err.max()))
            ratios.append(ratio)
            st = per_bits.setdefault(op.bits, {"tensors": 0, "max_abs_err": 0.0})
            st["tensors"] += 1
            st["max_abs_err"] = max(st["max_abs_err"], float(err.max()))
            if ratio > 1:
                mismatches.append(f"{op.module}: onnxruntime differs from quantkit.load by {err.max():.3g} "
                                  f"({ratio:.3g}x the fp32 bound; a packing or decoding bug)")
        batch.clear()

    size = 0
    for op in ops:
        batch.append(op)
        size += op.B.nbytes
        if size >= _BATCH_BYTES:
            flush()
            size = 0
    flush()
    stats = {"tensors_checked": len(errs), "not_checkable": len(not_checkable),
             "max_abs_err": max(errs, default=0.0), "max_err_over_bound": max(ratios, default=0.0),
             "per_bits": {str(b): s for b, s in sorted(per_bits.items())}, "rows": rows,
             "bound": "(K + 2) * 2**-24 * (|x| @ |W|.T), float64 reference"}
    checks = [
        from_offenders("onnxruntime.cross_check", mismatches,
                       "onnxruntime's MatMulNBits must equal the matmul with quantkit.load's weight", source)
        if errs or mismatches else skipped("onnxruntime.cross_check", "no quantized tensor could be checked", source),
        from_offenders("onnxruntime.checkable", not_checkable,
                       "not checkable: onnxruntime cannot express this tensor, its numbers were not cross-checked",
                       source),
    ]
    if checks[0].passed:
        checks[0].summary = ""
    return checks, stats

