#!/usr/bin/env python3
"""Writes the SBOM of one Panoptes image as CycloneDX 1.5 JSON on stdout.

Components, each with its package URL:
  - every Debian package installed in the base image (dpkg-query run inside it: pkg:deb),
  - every crate the binary's crate links (`cargo tree -e normal`, the lock file's versions:
    pkg:cargo; the workspace's own crates carry the image version),
  - for the worker, the Python wheels whose libraries are copied in (torch, nvidia-*: pkg:pypi);
    for the CUDA worker, torch and every wheel of the NVIDIA environment (--cuda-venv).
Called by build.sh; standard library only.
"""

import argparse
import datetime
import json
import subprocess
import sys
import uuid


def run(cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def debian_packages(base):
    out = run(["docker", "run", "--rm", "--network", "none", "--entrypoint", "dpkg-query",
               base, "-W", "-f", "${Package}\t${Version}\t${Architecture}\n"])
    for line in sorted(set(out.splitlines())):
        name, version, arch = line.split("\t")
        yield {"type": "library", "name": name, "version": version,
               "purl": f"pkg:deb/debian/{name}@{version}?arch={arch}&distro=debian-12"}


def crates(crate, version):
    if not crate:
        return
    out = run(["cargo", "tree", "--locked", "--offline", "-p", crate, "-e", "normal",
               "--prefix", "none", "-f", "{p}"])
    seen = set()
    for line in out.splitlines():
        parts = line.replace(" (*)", "").split()
        if len(parts) < 2 or not parts[1].startswith("v"):
            continue
        name, ver = parts[0], parts[1][1:]
        if (name, ver) in seen:
            continue
        seen.add((name, ver))
        local = len(parts) > 2 and parts[2].startswith("(/")
        yield {"type": "library", "name": name, "version": version if local else ver,
               "purl": f"pkg:cargo/{name}@{ver}"}


def wheels(venv, names):
    """The given distributions of venv, or (names empty) all but the packaging tools."""
    if not venv:
        return
    py = f"{venv}/bin/python"
    code = ("import importlib.metadata as m, sys\n"
            "names = sys.argv[1:] or sorted({d.metadata['Name'] for d in m.distributions()}\n"
            "                               - {'pip', 'setuptools'})\n"
            "for n in names:\n"
            "    print(n, m.version(n))\n")
    for line in run([py, "-c", code, *names]).splitlines():
        name, ver = line.split()
        yield {"type": "library", "name": name, "version": ver,
               "purl": f"pkg:pypi/{name}@{ver}"}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--image", required=True)
    ap.add_argument("--base", required=True)
    ap.add_argument("--crate", required=True)
    ap.add_argument("--version", required=True)
    ap.add_argument("--revision", required=True)
    ap.add_argument("--torch", default="")
    ap.add_argument("--cuda-venv", default="")
    args = ap.parse_args()
    # the CPU worker's libraries: torch and the two NVIDIA wheels libtorch_cpu names; the CUDA
    # worker's: torch and the whole NVIDIA environment (which holds those two as well)
    torch_names = ["torch"] if args.cuda_venv else \
        ["torch", "nvidia-cuda-runtime", "nvidia-cuda-cupti"]
    components = [*debian_packages(args.base), *crates(args.crate, args.version),
                  *wheels(args.torch, torch_names), *wheels(args.cuda_venv, [])]
    for c in components:
        c["bom-ref"] = c["purl"]
    bom = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{uuid.uuid4()}",
        "version": 1,
        "metadata": {
            "timestamp": datetime.datetime.now(datetime.timezone.utc)
            .strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tools": {"components": [{"type": "application", "name": "deploy/images/sbom.py"}]},
            "component": {
                "type": "container", "name": args.image.rsplit(":", 1)[0],
                "version": args.version, "bom-ref": args.image,
                "properties": [{"name": "org.opencontainers.image.revision",
                                "value": args.revision},
                               {"name": "org.opencontainers.image.base.name",
                                "value": args.base}],
            },
        },
        "components": components,
    }
    json.dump(bom, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
