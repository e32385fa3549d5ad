"""Checks on this machine that the GPU machine's image (device_packages.txt) plus the carried wheels (.whl/, made by
carry_wheels.sh) hold everything the GPU scripts import: a child Python without site-packages sees only those
packages (the image's taken from this venv; the carried pure-Python wheels installed as run_speed.sh installs them
there; the carried binary ones, built for the device's Python, taken from this venv) and imports every module of
nnunet-multimodal and the nnU-Net entry points the scripts run. Exit 1 naming what is missing.

    python benchmarks/gpu/check_carried.py        (from the repository root, after carry_wheels.sh)
"""
import importlib.metadata as metadata
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
ENTRY_POINTS = ["nnunetv2.experiment_planning.plan_and_preprocess_entrypoints", "nnunetv2.run.run_training",
                "nnunetv2.inference.predict_from_raw_data", "nnunetv2.evaluation.find_best_configuration"]
IMPORT_ALL = """
import importlib, pkgutil, sys
import nnunet_multimodal
failed = []
names = [m.name for m in pkgutil.walk_packages(nnunet_multimodal.__path__, "nnunet_multimodal.")] + sys.argv[1:]
for name in names:
    try:
        importlib.import_module(name)
    except Exception as e:
        failed.append(f"{name}: {type(e).__name__}: {e}")
print(f"imported {len(names) - len(failed)} of {len(names)} modules")
print(*failed, sep="\\n")
sys.exit(1 if failed else 0)
"""


def names_in(listing: Path, section: str | None = None) -> list[str]:
    """Package names of a list file (``section``: only those under ``[section]``)."""
    names, current = [], None
    for line in listing.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            current = line.strip("[]")
        elif line and not line.startswith("#") and (section is None or current == section):
            names.append(line)
    return names


def top_level_names(distribution: str) -> set[str]:
    """The importable top-level modules and packages a distribution installed in this environment."""
    files = metadata.distribution(distribution).files or []
    tops = set()
    for f in files:
        first = f.parts[0]
        if first.endswith((".dist-info", ".data")) or first in ("..", "__pycache__") or first.endswith(".pth"):
            continue
        tops.add(re.sub(r"\..*$", "", first) if len(f.parts) == 1 else first)
    return tops


def link_distributions(names: list[str], farm: Path) -> list[str]:
    """Links the top-level modules of each installed distribution into ``farm``; returns those not installed."""
    absent = []
    for name in names:
        try:
            tops = top_level_names(name)
            root = Path(metadata.distribution(name).locate_file(""))
        except metadata.PackageNotFoundError:
            absent.append(name)
            continue
        for top in tops:
            for source in [root / top, *root.glob(f"{top}.*")]:
                target = farm / source.name
                if source.exists() and not target.exists():
                    target.symlink_to(source)
    return absent


def main() -> int:
    wheels = sorted(Path(".whl").glob("*.whl"))
    pure = [w for w in wheels if w.name.endswith("-py3-none-any.whl")]
    if not wheels:
        print("no .whl/ here: run benchmarks/gpu/carry_wheels.sh first")
        return 1
    with tempfile.TemporaryDirectory() as folder:
        farm = Path(folder)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--target", str(farm), *map(str, pure)], check=True)
        absent = link_distributions(names_in(HERE / "device_packages.txt") + names_in(HERE / "carried_packages.txt",
                                                                                      "binary"), farm)
        print(f"{len(absent)} packages of the device's image are not installed here, so not offered to the imports")
        result = subprocess.run([sys.executable, "-S", "-c", IMPORT_ALL, *ENTRY_POINTS],
                                env={"PYTHONPATH": str(farm), "PATH": "/usr/bin:/bin"}, text=True)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
