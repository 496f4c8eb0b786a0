#!/usr/bin/env bash
# GPU check for the lent NVIDIA machine (the `device` tool): install the carried wheels and
# Vulkan loader, list devices, run the GPU-marked tests (cuda + hardware wgpu adapters) and
# the GPU benchmarks (bench_gpu, bench_numba_sum, bench_kernels, bench_memory; a failing one
# does not stop the others), and write logs + JSON to $OUT (or ./gpu-check-out here).
#
#   run (device tool), carry [".whl", ".gl"]:  bash scripts/gpu-check.sh
#
# Narrower runs (device time is scarce): GPU_TESTS selects test files (default tests/;
# "none" skips the tests), GPU_BENCHES the benchmarks among
# "gpu numba kernels memory scheduler telemetry" (default all) and "dashboard" (asked for only), e.g.
#   GPU_TESTS="tests/test_kernel_cuda.py" GPU_BENCHES=kernels bash scripts/gpu-check.sh
#
# The wheels (.whl/) and debs (.gl/) are made on the dev machine, see README "GPU check".
set -uo pipefail
OUTDIR=${OUT:-gpu-check-out}
mkdir -p "$OUTDIR"
export PYTHONUNBUFFERED=1 XDG_RUNTIME_DIR=/tmp

if ls .gl/*.deb >/dev/null 2>&1; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -f "$icd" ] && export VK_DRIVER_FILES=$icd

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv | tee "$OUTDIR/nvidia-smi.txt"
python3 -m vgpu_nb devices 2>&1 | tee "$OUTDIR/devices.txt"

label=$(python3 -c "import cupy; print(cupy.cuda.runtime.getDeviceProperties(0)['name'].decode().split()[-1].lower())" 2>/dev/null || echo gpu)
BENCHES=" ${GPU_BENCHES:-gpu numba kernels memory scheduler telemetry} "
# shellcheck disable=SC2086  (GPU_TESTS is a list of paths)
# GPU-marked tests, and the scheduler's (device="auto", split: cuda is a candidate here)
if [ "${GPU_TESTS:-tests/}" != "none" ]; then
  timeout "${GPU_TEST_TIMEOUT:-3000}" python3 -m pytest -m "gpu or scheduler" -q -p no:cacheprovider ${GPU_TESTS:-tests/} ${PYTEST_ARGS:-} >"$OUTDIR/pytest-gpu.log" 2>&1
  rc=$?
  tail -n 30 "$OUTDIR/pytest-gpu.log"
  echo "pytest -m 'gpu or scheduler' exit code: $rc"
else
  rc=0
fi

if [[ $BENCHES == *" gpu "* ]]; then
  python3 bench/bench_gpu.py --out "$OUTDIR/gpu_$label.json" ${BENCH_ARGS:-} 2>&1 | tee "$OUTDIR/bench-gpu.log"
fi
if [[ $BENCHES == *" numba "* ]]; then
  # (log appended to bench-gpu.log: with bench_memory's JSON, a separate log would be a 9th file)
  python3 bench/bench_numba_sum.py --log2n 24 28 --repeat 15 --label "$label" --out "$OUTDIR/numba_sum_$label.json" 2>&1 | tee -a "$OUTDIR/bench-gpu.log"
fi
# kernel language: saxpy / sumsq / launch overhead / fresh-process first launch, on numba,
# cuda:N and the hardware wgpu adapter (KBENCH_ARGS e.g. "--devices cuda:0 --repeat 30").
# Its log is appended to bench-gpu.log: the device tool brings back at most 8 files.
if [[ $BENCHES == *" kernels "* ]]; then
  python3 bench/bench_kernels.py --label "$label" --out "$OUTDIR/kernels_$label.json" ${KBENCH_ARGS:-} 2>&1 | tee -a "$OUTDIR/bench-gpu.log"
fi
# tiered memory: streamed vg.sum of a host-tier array (4x a 1 GiB device budget) vs pinned H2D,
# of a disk-tier array (2 GiB spill file in a temp dir under /tmp) vs np.fromfile on cuda:0 and
# numba, and the spill overhead of a pipeline over 4x the budget (MBENCH_ARGS e.g.
# "--devices cuda:0,wgpu:0 --drop-caches --repeat 9"). Log appended to bench-gpu.log too:
# $OUT then holds 8 files (nvidia-smi, devices, pytest and bench logs, 4 JSON), the most
# the device tool brings back.
if [[ $BENCHES == *" memory "* ]]; then
  python3 bench/bench_memory.py --label "$label" --out "$OUTDIR/memory_$label.json" ${MBENCH_ARGS:-} 2>&1 | tee -a "$OUTDIR/bench-gpu.log"
fi
# scheduler: regret of device="auto" vs the per-size oracle (saxpy, sumsq to 10^9, matmul to
# 10^8 elements) and split speedup over host data (SBENCH_ARGS); telemetry: subscriber
# overhead on 10^4 tiny launches on cuda (TBENCH_ARGS e.g. "--rounds 31"). Logs appended to
# bench-gpu.log.
if [[ $BENCHES == *" scheduler "* ]]; then
  python3 bench/bench_scheduler.py --label "$label" --out "$OUTDIR/scheduler_$label.json" ${SBENCH_ARGS:---max-exp 9 --matmul-max-exp 8 --split-exp 27} 2>&1 | tee -a "$OUTDIR/bench-gpu.log"
fi
if [[ $BENCHES == *" telemetry "* ]]; then
  python3 bench/bench_telemetry.py --device cuda --tag "$label" --out "$OUTDIR/telemetry_$label.json" ${TBENCH_ARGS:-} 2>&1 | tee -a "$OUTDIR/bench-gpu.log"
fi
# what an open vg.dashboard() costs a loop of tiny launches on numba (all cores) and cuda
# (needs ipywidgets: its wheels and IPython's in .whl/; DBENCH_ARGS e.g. "--rounds 9")
if [[ $BENCHES == *" dashboard "* ]]; then
  for dev in numba cuda; do
    python3 bench/bench_dashboard.py --device "$dev" --tag "${label}-$dev" --out "$OUTDIR/dashboard_${label}-$dev.json" ${DBENCH_ARGS:-} 2>&1 | tee -a "$OUTDIR/bench-gpu.log"
  done
fi
exit $rc
