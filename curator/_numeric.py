"""COMPILED BUILDING BLOCKS (numba) shared by the read-side kernels (`curator._kernels`) and the
sign codes (`curator.signs`): dot products, a popcount and a prefetch.

fastmath is restricted to reassociation/contraction (so dot products vectorise); `inf` keeps
its meaning (padding and the top-k sentinel rely on it).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

FASTMATH = {"reassoc", "contract", "nsz", "arcp"}


@njit(nogil=True, cache=True, fastmath=FASTMATH)
def dot(a: np.ndarray, b: np.ndarray) -> np.float32:
    acc = np.float32(0.0)
    for j in range(a.shape[0]):
        acc += a[j] * b[j]
    return acc


@njit(nogil=True, cache=True, fastmath=FASTMATH)
def dot_code(qs: np.ndarray, code: np.ndarray) -> np.float32:
    """Σ qs_j · code_j for a uint8 centroid code (qs = query · step, see `curator.tree`)."""
    acc = np.float32(0.0)
    for j in range(qs.shape[0]):
        acc += qs[j] * np.float32(code[j])
    return acc


@intrinsic
def _ctpop(typingctx, x):
    """Set bits of a uint64: LLVM's ctpop, one instruction on x86-64 (numba has no popcount;
    a bit-twiddling one costs ~12 operations, and the sign pass does 5 per 64 dimensions)."""
    if not isinstance(x, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return types.uint64(types.uint64), codegen


@njit(nogil=True, cache=True)
def popcount(x: np.uint64) -> np.uint64:
    return _ctpop(x)  # type: ignore[call-arg]  # (typingctx is numba's, not the caller's)


@intrinsic
def _prefetch(typingctx, rows, i):
    """Hint the CPU to fetch the first cache line of row i of a 2-D C-contiguous array (LLVM's
    llvm.prefetch: read, keep in all cache levels); numba has no such call."""
    if not (isinstance(rows, types.Array) and rows.ndim == 2 and isinstance(i, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        row = builder.sext(args[1], ir.IntType(64)) if args[1].type.width < 64 else args[1]
        zero = ir.Constant(ir.IntType(64), 0)
        ptr = cgutils.get_item_pointer2(
            context,
            builder,
            ary.data,
            cgutils.unpack_tuple(builder, ary.shape),
            cgutils.unpack_tuple(builder, ary.strides),
            signature.args[0].layout,
            [row, zero],
        )
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.none(rows, i), codegen


@njit(nogil=True, cache=True)
def prefetch_row(rows: np.ndarray, i: int) -> None:
    """Start loading row i of `rows` (2-D, C-contiguous) into the caches; no effect on results."""
    _prefetch(rows, i)  # type: ignore[call-arg]
