"""Print the device `run` calls that carry .whl/ and .gpu-data/ to a lent GPU machine and run the suite.

Runs HERE, after benchmarks/gpu/fetch_wheels.sh. Each call may carry at most 64 MiB, working tree
included, and at most 8 carry paths; the machine keeps files outside the tree only while it stays
warm (30 s between calls). So the pieces in .whl/manifest.tsv (wheels, or chunks of the big ones)
and the .gpu-data/ folder are packed, largest first, into as few calls as fit; every transfer call
runs the same command, which moves whatever it carried into /root/dfscan-wheels (and .gpu-data/
into /root/dfscan-data). Then install_wheels.sh (reassemble, sha256, pip install --target
/root/site) and run_suite.sh.

    python3 benchmarks/gpu/plan_calls.py                 # the calls, readable
    python3 benchmarks/gpu/plan_calls.py --json          # the same as JSON: [{carry, command, timeout_s, what}]
    python3 benchmarks/gpu/plan_calls.py --separate-install   # install in its own call (default: in the last transfer call)

Issue the calls back to back, as printed: thinking between them lets the machine go back.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WHL = ".whl"
DATA = ".gpu-data"
MANIFEST = f"{WHL}/manifest.tsv"
CALL_LIMIT = 64 * 2**20  # the working tree that travels, carried paths included
MARGIN = 256 * 2**10  # slack for files that appear between planning and calling
MAX_CARRY = 8
MAX_COMMAND = 2000
WHEELS_THERE = "/root/dfscan-wheels"
DATA_THERE = "/root/dfscan-data"

# The same command for every transfer call: move what came, say what is there now.
TRANSFER = (f"set -e; W={WHEELS_THERE}; mkdir -p $W; "
            f"find {WHL} -maxdepth 1 -type f -exec mv -f -t $W {{}} +; "
            f"if [ -d {DATA} ]; then rm -rf {DATA_THERE}; mv {DATA} {DATA_THERE}; fi; "
            f"echo \"$(ls $W | wc -l) files, $(du -sm $W | cut -f1) MB in $W; "
            f"data: $(ls {DATA_THERE} 2>/dev/null | tr '\\n' ' ')\"")
# The first call also says what the machine is, before any more device time goes into it.
FIRST = ("nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; "
         "python3 -c 'import sys,torch; print(sys.version.split()[0], torch.__version__, torch.version.cuda, "
         "torch.cuda.is_available())'; python3 -m pip list 2>/dev/null | grep -iE "
         "'^(numpy|six|packaging|wheel|pyyaml|typing.extensions|optree|libcst|onnxruntime.*|pytest-xdist|"
         "nvidia-(dali|nvjpeg|nvimgcodec).*) ' | tr -s ' ' | paste -sd';' -; ")
INSTALL = "bash benchmarks/gpu/install_wheels.sh"
SUITE = "bash benchmarks/gpu/run_suite.sh"


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def check_wheels(folder: Path, pins: list[str]) -> int:
    """For fetch_wheels.sh: print the file each ``name==version`` resolved to, one a line; exit 1
    when a pin has no single file or a requirement is neither shipped nor on the GPU image."""
    import zipfile

    from packaging.requirements import Requirement

    on_image = {"numpy", "six", "packaging", "wheel", "pyyaml", "typing-extensions"}  # KINDS.md's list
    env = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
           "platform_python_implementation": "CPython", "os_name": "posix"}
    by_pin, problems = {}, []
    for pin in pins:
        name, version = pin.split("==")
        hits = [w.name for w in folder.glob("*.whl")
                if norm(w.name.split("-")[0]) == norm(name) and w.name.split("-")[1] == version]
        if len(hits) != 1:
            problems.append(f"{pin}: expected one wheel in {folder}, found {hits or 'none'}")
        else:
            by_pin[norm(name)] = hits[0]
    shipped = set(by_pin)

    def requires(f):
        with zipfile.ZipFile(folder / f) as z:
            meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
            return [Requirement(line.split(":", 1)[1].strip())
                    for line in z.read(meta).decode().splitlines() if line.startswith("Requires-Dist:")]

    def missing(req, extra=""):
        applies = req.marker is None or req.marker.evaluate({**env, "extra": extra})
        return applies and norm(req.name) not in shipped and norm(req.name) not in on_image

    for f in by_pin.values():
        for req in requires(f):
            if missing(req):
                problems.append(f"{f} needs {req}: neither shipped nor on the GPU image")
            if req.marker is None or req.marker.evaluate({**env, "extra": ""}):
                for extra in req.extras:  # DALI asks for nvidia-nvimgcodec-cu13[all]
                    target = by_pin.get(norm(req.name))
                    for sub in requires(target) if target else []:
                        if sub.marker is not None and missing(sub, extra):
                            problems.append(f"{target}[{extra}] needs {sub}: neither shipped nor on the image")
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        return 1
    print(f"ok: {len(by_pin)} wheels; their other needs ({', '.join(sorted(on_image))}) are on the image",
          file=sys.stderr)
    print("\n".join(by_pin[norm(p.split("==")[0])] for p in pins))
    return 0


def tree_bytes() -> int:
    """What travels with every call: tracked and untracked-not-ignored files (and shared/)."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, capture_output=True, check=True).stdout
    files = {ROOT / p for p in out.decode().split("\0") if p}
    shared = ROOT / "shared"
    if shared.is_dir():
        files |= {p for p in shared.rglob("*") if p.is_file()}
    return sum(p.stat().st_size for p in files if p.is_file() and not p.is_symlink())


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def read_manifest() -> list[dict]:
    path = ROOT / MANIFEST
    if not path.is_file():
        sys.exit(f"{path}: absent; run benchmarks/gpu/fetch_wheels.sh first")
    rows = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        file, size, sha, pieces = line.split("\t")
        rows.append({"file": file, "bytes": int(size), "sha256": sha, "pieces": pieces.split(",")})
    return rows


def ignored(paths: list[str]) -> set[str]:
    out = subprocess.run(["git", "check-ignore", "--stdin"], cwd=ROOT, input="\n".join(paths),
                         capture_output=True, text=True).stdout
    return set(out.split())


def pack(items: list[tuple[str, int]], budget: int, slots: int) -> list[list[tuple[str, int]]]:
    """First fit, largest first, at most ``slots`` items and ``budget`` bytes per call."""
    bins: list[list[tuple[str, int]]] = []
    for item in sorted(items, key=lambda it: -it[1]):
        for b in bins:
            if len(b) < slots and sum(s for _, s in b) + item[1] <= budget:
                b.append(item)
                break
        else:
            bins.append([item])
    return bins


def plan(separate_install: bool = False, with_data: bool = True) -> tuple[list[dict], dict]:
    rows = read_manifest()
    manifest_size = (ROOT / MANIFEST).stat().st_size
    items, problems = [], []
    for r in rows:
        for piece in r["pieces"]:
            p = ROOT / WHL / piece
            if not p.is_file():
                problems.append(f"{p}: listed in {MANIFEST} but absent; re-run fetch_wheels.sh")
            else:
                items.append((f"{WHL}/{piece}", p.stat().st_size))
    data = ROOT / DATA
    if with_data:
        if data.is_dir():
            items.append((DATA, folder_bytes(data)))
        else:
            print(f"note: no {DATA}/ here: the suite will find no data there (fetch_wheels.sh copies it)",
                  file=sys.stderr)
    tree = tree_bytes()
    budget = CALL_LIMIT - tree - manifest_size - MARGIN
    for path, size in items:
        if size > budget:
            problems.append(f"{path}: {size / 2**20:.1f} MiB, but a call has room for {budget / 2**20:.1f} MiB "
                            f"beside the {tree / 2**20:.1f} MiB working tree; re-split smaller: "
                            f"CHUNK_MB={max(1, budget // 2**20 - 1)} bash benchmarks/gpu/fetch_wheels.sh")
    paths = [MANIFEST] + [p for p, _ in items]
    not_ignored = [p for p in paths if p not in ignored(paths)]
    if not_ignored:
        problems.append(f"not git-ignored (they would travel with every call): {not_ignored}")
    if problems:
        sys.exit("\n".join(problems))

    bins = pack(items, budget, MAX_CARRY - 1)  # one slot is the manifest's
    n = len(bins)
    calls = []
    for i, b in enumerate(bins, 1):
        command = (FIRST if i == 1 else "") + TRANSFER
        what = f"transfer {i}/{n}: {sum(s for _, s in b) / 1e6:.1f} MB"
        if i == n and not separate_install:
            command += f" && {INSTALL}"
            what += " + install"
        calls.append({"what": what, "carry": [MANIFEST] + [p for p, _ in b], "command": command,
                      "timeout_s": 300 if i == n and not separate_install else 120,
                      "bytes": tree + manifest_size + sum(s for _, s in b)})
    if separate_install or not bins:
        calls.append({"what": "install", "carry": [], "command": INSTALL, "timeout_s": 300, "bytes": tree})
    calls.append({"what": "suite: env, GPU tests, engine rate, bench sweep, summary (about 6 min)",
                  "carry": [], "command": f"{SUITE} all", "timeout_s": 600, "bytes": tree})
    calls.append({"what": "suite: the CPU tests that matter, on the GPU image; CPU-vs-GPU parity (about 4 min)",
                  "carry": [], "command": f"{SUITE} tests", "timeout_s": 600, "bytes": tree})
    for c in calls:
        assert len(c["carry"]) <= MAX_CARRY and len(c["command"]) <= MAX_COMMAND, c
        assert c["bytes"] <= CALL_LIMIT, c
    info = {"tree_bytes": tree, "budget_bytes": budget, "transfer_calls": n,
            "wheel_bytes": sum(r["bytes"] for r in rows), "wheels": len(rows),
            "data_bytes": folder_bytes(data) if with_data and data.is_dir() else 0}
    return calls, info


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print the calls as JSON")
    p.add_argument("--separate-install", action="store_true", help="install in a call of its own")
    p.add_argument("--no-data", action="store_true", help=f"leave {DATA}/ out")
    p.add_argument("--check-wheels", nargs="+", metavar=("FOLDER", "PIN"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.check_wheels:
        return check_wheels(Path(args.check_wheels[0]), args.check_wheels[1:])
    calls, info = plan(args.separate_install, not args.no_data)
    if args.json:
        print(json.dumps([{k: c[k] for k in ("what", "carry", "command", "timeout_s")} for c in calls], indent=1))
        return 0
    print(f"# {info['wheels']} wheels, {info['wheel_bytes'] / 1e6:.1f} MB; data {info['data_bytes'] / 1e6:.1f} MB; "
          f"working tree {info['tree_bytes'] / 1e6:.2f} MB travels with every call; room per call "
          f"{info['budget_bytes'] / 1e6:.1f} MB")
    print(f"# {info['transfer_calls']} transfer calls, then the suite. Issue them back to back (the machine "
          f"keeps /root only while warm: 30 s between calls). A reply with warm=false after the first call "
          f"means a fresh machine: start again from call 1.")
    print("# On a failed install, re-run only:", INSTALL, " (pieces stay in", WHEELS_THERE, "while warm)")
    for i, c in enumerate(calls, 1):
        print(f"\n## call {i}/{len(calls)}: {c['what']} ({c['bytes'] / 2**20:.1f} MiB travels)")
        print(f"carry: {json.dumps(c['carry'])}")
        print(f"timeout_s: {c['timeout_s']}")
        print(f"command: {c['command']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
