"""Static SASS instructions of one path of the scan kernel, per source line (docs/gpu-validation.md
counts the scan kernel's paths with it). No GPU needed: nvcc and nvdisasm (CUDA toolkit, or the
nvidia-cuda-nvdisasm wheel).

The float32 instance of ``laplex_tiles`` is specialised to one path by turning kernel arguments into
constants (``phase=3 rperm=nullptr ...``), compiled for sm_90 with line information, disassembled,
and its instructions counted by the innermost source line they come from. ``--whole-tiles`` takes
the whole-tile merge only (every tile but the last). Loops are counted once: the executed count
adds their further rounds.

    python docs/scripts/sass_counts.py phase=3 square=0 rperm=nullptr cperm=nullptr stage=nullptr \\
        out_signed=nullptr out_moment=nullptr k=1 rows_known=1 --whole-tiles
"""

import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "..", "..", "laplexops", "backends", "laplex_scan.cu")
CONSTANTS = {
    "phase": "const int phase = {};",
    "square": "const int square = {};",
    "k": "const int k = {};",
    "rows_known": "const int rows_known = {};",
    "rperm": "const I* __restrict__ rperm = {};",
    "cperm": "const I* __restrict__ cperm = {};",
    "stage": "B* __restrict__ stage = {};",
    "out_signed": "V* __restrict__ out_signed = {};",
    "out_moment": "V* __restrict__ out_moment = {};",
}


def specialise(source: str, fixed: dict, whole_tiles: bool) -> str:
    start = source.index("laplex_tiles(const int phase")
    body = source.index("{", start)
    signature = source[start:body]
    lines = []
    for name, value in fixed.items():
        signature = re.sub(rf"\b{name}\b(?=[,)])", name + "_arg", signature)
        lines.append(CONSTANTS[name].format(value))
    source = source[:start] + signature + "{\n" + "\n".join(lines) + "\n" + source[body + 1 :]
    if whole_tiles:
        source = source.replace("if (len == LAPLEX_TILE) merge_items", "if (true) merge_items")
    return source


def main(argv):
    fixed = dict(a.split("=", 1) for a in argv if "=" in a)
    tool = shutil.which("nvdisasm") or next(
        iter(
            sorted(
                p
                for base in sys.path
                for p in [os.path.join(base, "nvidia", "cu13", "bin", "nvdisasm")]
                if os.path.exists(p)
            )
        ),
        None,
    )
    if tool is None:
        sys.exit("needs nvdisasm (CUDA toolkit, or pip install nvidia-cuda-nvdisasm)")
    with tempfile.TemporaryDirectory() as tmp:
        spec = os.path.join(tmp, "spec.cu")
        with open(SOURCE) as fh:
            text = specialise(fh.read(), fixed, "--whole-tiles" in argv)
        with open(spec, "w") as fh:
            fh.write(text)
        unit = os.path.join(tmp, "unit.cu")
        with open(unit, "w") as fh:
            fh.write(
                '#include "spec.cu"\nvoid* const a[] = { (void*)&laplex::laplex_tiles'
                "<float, float, float, float, int, false> };\n"
            )
        cubin = os.path.join(tmp, "unit.cubin")
        out = subprocess.run(
            [
                "nvcc",
                "-std=c++17",
                "-cubin",
                "-arch=sm_90",
                "-lineinfo",
                "-Xptxas",
                "-v",
                "-DLAPLEX_LEAN_PHASE1=1",
                "-diag-suppress",
                "177,550",
                "-o",
                cubin,
                unit,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        print(*re.findall(r"Used \d+ registers", out.stderr))
        sass = subprocess.run(
            [tool, "-g", "-c", cubin], capture_output=True, text=True, check=True
        ).stdout
    counts, line = collections.Counter(), None
    for row in sass.splitlines():
        if row.lstrip().startswith("//##"):
            found = re.search(r"line (\d+)", row)
            line = int(found.group(1)) if found else line
        elif re.match(r"\s+/\*[0-9a-f]{4}\*/", row):
            counts[line] += 1
    print("total", sum(counts.values()))
    source = text.split("\n")
    for number in sorted(n for n in counts if n):
        print(f"{number:5d} {counts[number]:4d}  {source[number - 1].strip()[:90]}")


if __name__ == "__main__":
    main(sys.argv[1:])
