#!/bin/bash
# One device session (docs/gpu-validation.md): the pending GPU checks in priority order, each
# bounded by the time left (BUDGET seconds, default 540). Needs the array-api-compat wheel in .whl/.
# Writes its logs to $OUT (the device tool's folder).
export PYTHONUNBUFFERED=1
START=$(date +%s); BUDGET=${BUDGET:-540}
left() { echo $(( BUDGET - ($(date +%s) - START) )); }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:.
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > $OUT/smi.txt 2>&1
python3 -c "import cupy, numba, numpy, torch; print(cupy.__version__, numba.__version__, numpy.__version__, torch.__version__)" >> $OUT/smi.txt 2>&1
lscpu | grep "Model name" >> $OUT/smi.txt
cat $OUT/smi.txt
echo "== bench --gpu --huge (left $(left) s)"
timeout $(( $(left) - 150 )) python3 -m laplexops bench --gpu --huge --json $OUT/gpu.json > $OUT/bench.log 2>&1
echo "bench rc=$? at $(( $(date +%s) - START )) s"; tail -40 $OUT/bench.log
echo "== torch cuda (left $(left) s)"
timeout $(( $(left) - 140 )) python3 -m pytest -q -p no:cacheprovider tests/test_torch.py -k cuda > $OUT/torch.log 2>&1
echo "torch rc=$? at $(( $(date +%s) - START )) s"; tail -5 $OUT/torch.log
echo "== dask with CuPy chunks (left $(left) s)"
if python3 -c "import dask, distributed" 2>/dev/null; then
  LAPLEXOPS_HOST_KERNELS=0 timeout $(( $(left) - 90 )) python3 -m pytest -q -p no:cacheprovider tests/test_dask_local.py > $OUT/dask.log 2>&1
  echo "dask rc=$? at $(( $(date +%s) - START )) s"; tail -3 $OUT/dask.log
fi
echo "== ncu (left $(left) s)"
timeout $(( $(left) - 70 )) ncu --clock-control none --profile-from-start off --set full -k regex:laplex_tiles python3 docs/scripts/ncu_sorted_matvec.py > $OUT/ncu.log 2>&1
echo "ncu rc=$? at $(( $(date +%s) - START )) s"
grep -E "laplex_tiles|Duration|Executed Ipc|Executed Instructions  |Registers Per|DRAM Throughput|Issue Slots Busy|Achieved Occupancy|Memory Throughput" $OUT/ncu.log | head -40
echo "== variants (left $(left) s)"
timeout $(( $(left) - 5 )) python3 docs/scripts/gpu_variants.py 27 > $OUT/variants.log 2>&1
echo "variants rc=$? at $(( $(date +%s) - START )) s"; cat $OUT/variants.log | tail -40
