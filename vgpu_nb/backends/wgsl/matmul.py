"""WGSL for ``C = A @ B`` (f32, row-major): a register-blocked tiled shader.

The recipe of fast SGEMM kernels, in WGSL:

* each workgroup computes a ``TILE_M × TILE_N`` tile of C with ``(TILE_M / THREAD_M) ×
  (TILE_N / THREAD_N)`` threads; each thread keeps a ``THREAD_M × THREAD_N`` block of C in
  registers (``vec4<f32>`` accumulators, so one shared-memory read feeds 4 FMAs);
* the K dimension is walked in steps of ``TILE_K``: the A and B tiles are staged in
  workgroup memory, A **transposed** (``As[k][m]``) so that the inner loop reads a
  ``vec4`` of 4 consecutive rows and a ``vec4`` of 4 consecutive columns, without bank
  conflicts;
* a thread's rows (columns) are ``THREAD_M / 4`` groups of 4, the groups ``TILE_M /
  (THREAD_M / 4)`` apart, so neighbouring threads read neighbouring ``vec4`` s;
* global loads are ``vec4`` where rows are 16-byte aligned (``K % 4 == 0`` for A,
  ``N % 4 == 0`` for B and C), and the next K-tile is loaded into registers while the
  current one is multiplied (register double-buffering: one barrier pair per K-tile);
* edges: shapes that are not multiples of the tile get bounds checks (zeros outside A/B,
  no stores outside C); the aligned case compiles without them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from . import Shader

# ---- knobs (tune on the GPU) ----------------------------------------------------------------
# NVIDIA H200 / Vulkan, 4096² f32: 128×128 tile, K-tile 8, 8×8 per thread = 35.7 TFLOPS
# (8192²: 35.9, 4095² with edge checks: 28.6, 2048²: 34.4, 1024²: 15.9). K-tiles 16/32 and
# 64×128, 128×64, 64×64 tiles gave 22-26 TFLOPS at 4096² (per-op timestamps of queued
# matmuls, which can overlap: a first sweep, to be redone with batch timers).
#: Output tile per workgroup (rows, columns) and K-tile staged in workgroup memory.
TILE_M = 128
TILE_N = 128
TILE_K = 8
#: Register block per thread (multiples of 4). Threads per workgroup:
#: (TILE_M / THREAD_M) * (TILE_N / THREAD_N) — 256 with the defaults.
THREAD_M = 8
THREAD_N = 8


@dataclass(frozen=True)
class MatmulSpec:
    """Which variant of the shader a call needs (everything else is uniform data)."""

    vec_a: bool  # K % 4 == 0: A rows are read as vec4
    vec_b: bool  # N % 4 == 0: B rows are read and C rows written as vec4
    check_m: bool  # M % TILE_M != 0
    check_n: bool  # N % TILE_N != 0
    check_k: bool  # K % TILE_K != 0
    tile_m: int = TILE_M
    tile_n: int = TILE_N
    tile_k: int = TILE_K
    thread_m: int = THREAD_M
    thread_n: int = THREAD_N

    @property
    def threads_x(self) -> int:
        return self.tile_n // self.thread_n

    @property
    def threads_y(self) -> int:
        return self.tile_m // self.thread_m

    @property
    def workgroup(self) -> int:
        return self.threads_x * self.threads_y

    def check(self) -> None:
        """Fail early on knob combinations the generator cannot lay out."""
        wg = self.workgroup
        ok = (
            self.thread_m % 4 == 0
            and self.thread_n % 4 == 0
            and self.tile_k % 4 == 0
            and self.tile_m % self.thread_m == 0
            and self.tile_n % self.thread_n == 0
            and wg <= 1024
        )
        if not ok:
            raise ValueError(f"matmul tile parameters do not fit together: {self}")


def spec_for(m: int, k: int, n: int, max_shared: int = 16384) -> MatmulSpec:
    """The variant for an ``(m, k) @ (k, n)`` product with the module's knobs (read now,
    so that changing them takes effect), the K-tile halved until both staged tiles fit
    in ``max_shared`` bytes of workgroup memory."""
    tile_k = TILE_K
    while tile_k > 4 and 4 * tile_k * (TILE_M + TILE_N) > max_shared:
        tile_k //= 2
    return MatmulSpec(
        vec_a=k % 4 == 0,
        vec_b=n % 4 == 0,
        check_m=m % TILE_M != 0,
        check_n=n % TILE_N != 0,
        check_k=k % tile_k != 0,
        tile_m=TILE_M,
        tile_n=TILE_N,
        tile_k=tile_k,
        thread_m=THREAD_M,
        thread_n=THREAD_N,
    )


def groups(spec: MatmulSpec, m: int, n: int, max_per_dim: int) -> tuple[int, int, int]:
    """Dispatch size: x over column tiles, y (and z past the per-dimension cap) over row
    tiles; the shader folds y and z back into one row-tile index."""
    gx = -(-n // spec.tile_n)
    gm = -(-m // spec.tile_m)
    gz = -(-gm // max_per_dim)
    return gx, -(-gm // gz), gz


def _cond(*parts: str) -> str:
    parts = tuple(p for p in parts if p)
    return " && ".join(parts)


@functools.lru_cache(maxsize=64)
def matmul_shader(spec: MatmulSpec) -> Shader:
    """WGSL source of the tiled matmul. Params ``M``, ``N``, ``K``."""
    spec.check()
    bm, bn, bk, tm, tn = spec.tile_m, spec.tile_n, spec.tile_k, spec.thread_m, spec.thread_n
    wgx, wgy, wg = spec.threads_x, spec.threads_y, spec.workgroup
    a_t = "vec4<f32>" if spec.vec_a else "f32"
    b_t = "vec4<f32>" if spec.vec_b else "f32"
    lines: list[str] = []
    emit = lines.append

    # what each thread moves per K-tile: (register, flat slot expression, guard when the
    # tile has fewer slots than a whole number of workgroup sweeps)
    def slots(total: int) -> list[tuple[int, str, str]]:
        return [
            (i, f"(lid + {i * wg}u)", f"lid + {i * wg}u < {total}u" if (i + 1) * wg > total else "")
            for i in range(-(-total // wg))
        ]

    a_slots = slots(bm * bk // 4 if spec.vec_a else bm * bk)
    b_slots = slots(bk * bn // 4 if spec.vec_b else bk * bn)

    # -- global → registers (one K-tile) ---------------------------------------------------
    def tile_loads(reg: str, buf: str, slots_: list, vec: bool, cols: int, row0: str,
                   rows_lim: str, check_rows: bool, col0: str, cols_lim: str,
                   check_cols: bool, ld: str) -> list[str]:  # fmt: skip
        """Loads of one (rows × cols) tile of row-major ``buf`` (leading dimension ``ld``)
        starting at (row0, col0), zero outside (rows_lim, cols_lim)."""
        out = []
        for i, q, guard in slots_:
            if vec:
                row, cq = f"({q} / {cols // 4}u)", f"({q} % {cols // 4}u)"
                col_cond = f"{col0} + 4u * {cq} < {cols_lim}"
                idx = f"({row0} + {row}) * ({ld} / 4u) + {col0} / 4u + {cq}"
            else:
                row, col = f"({q} / {cols}u)", f"({q} % {cols}u)"
                col_cond = f"{col0} + {col} < {cols_lim}"
                idx = f"({row0} + {row}) * {ld} + {col0} + {col}"
            cond = _cond(
                guard,
                f"{row0} + {row} < {rows_lim}" if check_rows else "",
                col_cond if check_cols else "",
            )
            zero = "vec4<f32>(0.0)" if vec else "0.0"
            out.append(_guarded(f"{reg}{i}", f"{buf}[{idx}]", cond, zero))
        return out

    def load_tile(k0: str) -> str:
        a = tile_loads("ra", "A", a_slots, spec.vec_a, bk, "m0", "p.M", spec.check_m,
                       k0, "p.K", spec.check_k, "p.K")  # fmt: skip
        b = tile_loads("rb", "B", b_slots, spec.vec_b, bn, k0, "p.K", spec.check_k,
                       "n0", "p.N", spec.check_n, "p.N")  # fmt: skip
        return "".join(a + b)

    # -- registers → workgroup memory (A transposed) ---------------------------------------
    def store_tile() -> str:
        out = []
        for i, q, guard in a_slots:
            if spec.vec_a:
                row, kq = f"({q} / {bk // 4}u)", f"({q} % {bk // 4}u)"
                sts = [
                    f"As[(4u * {kq} + {c}u) * {bm // 4}u + {row} / 4u][{row} % 4u] = ra{i}[{c}];"
                    for c in range(4)
                ]
            else:
                row, kk = f"({q} / {bk}u)", f"({q} % {bk}u)"
                sts = [f"As[{kk} * {bm // 4}u + {row} / 4u][{row} % 4u] = ra{i};"]
            out.append(f"if ({guard}) {{ {' '.join(sts)} }}" if guard else " ".join(sts))
        for i, q, guard in b_slots:
            if spec.vec_b:
                st = f"Bs[{q}] = rb{i};"
            else:
                row, col = f"({q} / {bn}u)", f"({q} % {bn}u)"
                st = f"Bs[{row} * {bn // 4}u + {col} / 4u][{col} % 4u] = rb{i};"
            out.append(f"if ({guard}) {{ {st} }}" if guard else st)
        return "".join(line + "\n" for line in out)

    # -- the multiply: TILE_K rank-1 updates of the register block -------------------------
    def compute() -> str:
        blocks = []
        for kk in range(bk):  # each K step in its own block, so the let names can repeat
            out = [f"let a{i} = As[{kk * bm // 4 + i * wgy}u + ty];" for i in range(tm // 4)]
            out += [f"let b{j} = Bs[{kk * bn // 4 + j * wgx}u + tx];" for j in range(tn // 4)]
            for i in range(tm // 4):
                for r in range(4):
                    for j in range(tn // 4):
                        c = f"c{4 * i + r}_{j}"
                        out.append(f"{c} = fma(vec4<f32>(a{i}[{r}]), b{j}, {c});")
            blocks.append("{\n" + "".join(f"  {o}\n" for o in out) + "}\n")
        return "".join(blocks)

    def store_c() -> str:
        out = []
        for i in range(tm // 4):
            for r in range(4):
                row = f"m0 + {4 * i * wgy + r}u + 4u * ty"
                for j in range(tn // 4):
                    col = f"n0 + {4 * j * wgx}u + 4u * tx"
                    c = f"c{4 * i + r}_{j}"
                    if spec.vec_b:
                        cond = _cond(
                            "row_ < p.M" if spec.check_m else "",
                            "col_ < p.N" if spec.check_n else "",
                        )
                        st = f"C[(row_ * p.N + col_) / 4u] = {c};"
                        out.append(
                            f"{{ let row_ = {row}; let col_ = {col}; "
                            + (f"if ({cond}) {{ {st} }}" if cond else st)
                            + " }"
                        )
                    else:
                        parts = []
                        for cc in range(4):
                            st = f"C[row_ * p.N + col_ + {cc}u] = {c}[{cc}];"
                            cond = _cond(
                                "row_ < p.M" if spec.check_m else "",
                                f"col_ + {cc}u < p.N",
                            )
                            parts.append(f"if ({cond}) {{ {st} }}")
                        out.append(f"{{ let row_ = {row}; let col_ = {col}; {' '.join(parts)} }}")
        return "".join(line + "\n" for line in out)

    emit(
        f"// vgpu_nb matmul f32: {bm}x{bn} tile, K-tile {bk}, {tm}x{tn} per thread, "
        f"{wg} threads; vec A={spec.vec_a} vec B/C={spec.vec_b}, checks "
        f"m={spec.check_m} n={spec.check_n} k={spec.check_k}\n"
    )
    emit("struct P { M: u32, N: u32, K: u32 }\n")
    emit(f"@group(0) @binding(0) var<storage, read> A: array<{a_t}>;\n")
    emit(f"@group(0) @binding(1) var<storage, read> B: array<{b_t}>;\n")
    emit(f"@group(0) @binding(2) var<storage, read_write> C: array<{b_t}>;\n")
    emit("@group(0) @binding(3) var<uniform> p: P;\n")
    emit(f"var<workgroup> As: array<vec4<f32>, {bk * bm // 4}>;  // As[k][m], 4 rows per vec4\n")
    emit(f"var<workgroup> Bs: array<vec4<f32>, {bk * bn // 4}>;  // Bs[k][n]\n")
    emit(
        f"@compute @workgroup_size({wg})\n"
        "fn main(@builtin(local_invocation_index) lid: u32,\n"
        "        @builtin(workgroup_id) wid: vec3<u32>,\n"
        "        @builtin(num_workgroups) nwg: vec3<u32>) {\n"
    )
    body = [
        "let tile_m = wid.y + wid.z * nwg.y;",
        f"if (tile_m * {bm}u >= p.M) {{ return; }}  // padding groups of a folded dispatch",
        f"let m0 = tile_m * {bm}u;",
        f"let n0 = wid.x * {bn}u;",
        f"let tx = lid % {wgx}u;",
        f"let ty = lid / {wgx}u;",
    ]
    body += [f"var c{r}_{j} = vec4<f32>(0.0);" for r in range(tm) for j in range(tn // 4)]
    body += [f"var ra{i}: {a_t};" for i, _, _ in a_slots]
    body += [f"var rb{i}: {b_t};" for i, _, _ in b_slots]
    body.append(load_tile("0u").rstrip("\n"))
    body.append(f"let ntiles = (p.K + {bk - 1}u) / {bk}u;")
    body.append("for (var t = 0u; t < ntiles; t = t + 1u) {")
    body.append(_indent(store_tile()))
    body.append("  workgroupBarrier();")
    body.append("  if (t + 1u < ntiles) {")
    body.append(f"    let k1 = (t + 1u) * {bk}u;")
    body.append(_indent(load_tile("k1"), 2))
    body.append("  }")
    body.append(_indent(compute()))
    body.append("  workgroupBarrier();")
    body.append("}")
    body.append(store_c())
    emit("".join(f"  {line}\n" for b in body for line in b.splitlines()))
    emit("}\n")
    code = "".join(lines)
    bindings = (("A", "read"), ("B", "read"), ("C", "rw"), ("p", "uniform"))
    return Shader(code, bindings, (("M", "u32"), ("N", "u32"), ("K", "u32")), wg)


def _guarded(var: str, expr: str, cond: str, zero: str) -> str:
    if not cond:
        return f"{var} = {expr};\n"
    return f"if ({cond}) {{ {var} = {expr}; }} else {{ {var} = {zero}; }}\n"


def _indent(code: str, n: int = 1) -> str:
    pad = "  " * n
    return "".join(f"{pad}{line}\n" for line in code.splitlines()).rstrip("\n")
