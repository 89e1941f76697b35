#!/usr/bin/env python3
"""Regenerates the checked-in JSON Schemas of the custom resources the manifests use.

Not run in CI: CI validates against the files this writes (deploy/k8s/schemas/<group>/
<kind>_<version>.json), so a validation never depends on the network. Each schema is made
from a machine translation of the project's upstream CRD, pinned by version:

  keda.sh ScaledObject                  cloudcoil-models-keda==2.20.2.1 (KEDA 2.20.2 CRDs)
  monitoring.coreos.com PodMonitor      cloudcoil-models-prometheus-operator==0.93.1.1
  source/kustomize.toolkit.fluxcd.io    cloudcoil-models-fluxcd==2.9.5.1 (Flux 2.9.5)
  karpenter.sh NodePool,                the kopium bindings of crate kube-custom-resources-rs
  karpenter.k8s.aws EC2NodeClass        2024.11.1 (Karpenter v1 CRDs)

The cloudcoil packages are pydantic models generated from the CRDs' OpenAPI schemas; the
kopium bindings are Rust structs generated from the same. Both keep field names, required
fields, enums and nesting; neither keeps every pattern/format/range check of the CRD (so
these schemas check structure and names, what a typo breaks; the API server checks the rest).
Strict like `kubectl apply --validate=strict`: an unknown field anywhere is an error
(additionalProperties false on every object with declared properties).

Usage:  python3 -m venv /tmp/s && /tmp/s/bin/pip install cloudcoil-models-keda==2.20.2.1 \
          cloudcoil-models-prometheus-operator==0.93.1.1 cloudcoil-models-fluxcd==2.9.5.1
        cargo info kube-custom-resources-rs@2024.11.1    # puts its sources in ~/.cargo/registry
        /tmp/s/bin/python deploy/k8s/schemas/generate.py
"""

import glob
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CRATE = "kube-custom-resources-rs-2024.11.1"


def strict(node):
    """Adds additionalProperties: false to every object schema with declared properties."""
    if isinstance(node, dict):
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for value in node.values():
            strict(value)
    elif isinstance(node, list):
        for value in node:
            strict(value)
    return node


def resource(api_version, kind, spec, defs, spec_required=True):
    """The top-level schema of one custom resource."""
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": {"type": "object"},
        },
        "required": ["apiVersion", "kind", "metadata"] + (["spec"] if spec_required else []),
        "$defs": defs,
    }
    strict(schema)
    # metadata and status are checked by the API server, not described by the CRDs
    schema["properties"]["metadata"].pop("additionalProperties", None)
    schema["properties"]["status"].pop("additionalProperties", None)
    return schema


def from_pydantic(model, api_version, kind):
    """A cloudcoil model's spec as JSON Schema (aliases = the CRD's field names)."""
    full = model.model_json_schema(by_alias=True, ref_template="#/$defs/{model}")
    defs = full.get("$defs", {})
    spec = full["properties"]["spec"]
    return resource(api_version, kind, spec, defs, spec_required="spec" in full.get("required", []))


# ---- kopium (Rust) bindings -> JSON Schema ---------------------------------------------------

SCALARS = {
    "String": {"type": "string"},
    "bool": {"type": "boolean"},
    "f64": {"type": "number"},
    "f32": {"type": "number"},
    "IntOrString": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
    "serde_json::Value": {},
    "Condition": {"type": "object"},
}


def rust_type(t):
    t = t.strip()
    m = re.fullmatch(r"Option<(.*)>", t)
    if m:
        return rust_type(m.group(1))
    m = re.fullmatch(r"Vec<(.*)>", t)
    if m:
        return {"type": "array", "items": rust_type(m.group(1))}
    m = re.fullmatch(r"BTreeMap<String,\s*(.*)>", t)
    if m:
        return {"type": "object", "additionalProperties": rust_type(m.group(1))}
    if t in SCALARS:
        return dict(SCALARS[t])
    if re.fullmatch(r"[iu](8|16|32|64)", t):
        return {"type": "integer"}
    return {"$ref": f"#/$defs/{t}"}


def from_kopium(path):
    """Every struct and enum of one kopium file as JSON Schema definitions."""
    text = open(path).read()
    defs = {}
    for kind, name, body in re.findall(r"pub (struct|enum) (\w+) \{(.*?)\n\}", text, re.S):
        attrs = []
        if kind == "enum":
            values = []
            for line in body.splitlines():
                line = line.strip()
                if line.startswith("#[serde("):
                    attrs.append(line)
                elif re.fullmatch(r"\w+,", line):
                    rename = re.search(r'rename = "([^"]*)"', " ".join(attrs))
                    values.append(rename.group(1) if rename else line[:-1])
                    attrs = []
            defs[name] = {"type": "string", "enum": values}
            continue
        props, required = {}, []
        for line in body.splitlines():
            line = line.strip()
            if line.startswith("#[serde("):
                attrs.append(line)
                continue
            m = re.fullmatch(r"pub (r#)?(\w+): (.*),", line)
            if not m:
                continue
            a = " ".join(attrs)
            attrs = []
            rename = re.search(r'rename = "([^"]*)"', a)
            field = rename.group(1) if rename else m.group(2)
            props[field] = rust_type(m.group(3))
            if "default" not in a and not m.group(3).startswith("Option<"):
                required.append(field)
        d = {"type": "object", "properties": props}
        if required:
            d["required"] = required
        defs[name] = d
    return defs


def kopium_resource(rel, spec_name, api_version, kind):
    roots = glob.glob(os.path.expanduser(f"~/.cargo/registry/src/*/{CRATE}/src/{rel}"))
    if not roots:
        sys.exit(f"{CRATE} sources not found: run `cargo info kube-custom-resources-rs@2024.11.1`")
    defs = from_kopium(roots[0])
    spec = defs.pop(spec_name)
    for status in [k for k in defs if k.endswith("Status") or "Status" in k]:
        defs.pop(status)
    return resource(api_version, kind, spec, defs)


def write(group, kind, version, schema):
    os.makedirs(os.path.join(HERE, group), exist_ok=True)
    path = os.path.join(HERE, group, f"{kind.lower()}_{version}.json")
    with open(path, "w") as f:
        json.dump(schema, f, indent=1, sort_keys=True)
        f.write("\n")
    print(path)


def main():
    from cloudcoil.models.fluxcd.kustomize import v1 as flux_kustomize
    from cloudcoil.models.fluxcd.source import v1 as flux_source
    from cloudcoil.models.keda import v1alpha1 as keda
    from cloudcoil.models.prometheus_operator import v1 as prom

    write("keda.sh", "ScaledObject", "v1alpha1",
          from_pydantic(keda.ScaledObject, "keda.sh/v1alpha1", "ScaledObject"))
    write("monitoring.coreos.com", "PodMonitor", "v1",
          from_pydantic(prom.PodMonitor, "monitoring.coreos.com/v1", "PodMonitor"))
    write("source.toolkit.fluxcd.io", "GitRepository", "v1",
          from_pydantic(flux_source.GitRepository, "source.toolkit.fluxcd.io/v1", "GitRepository"))
    write("kustomize.toolkit.fluxcd.io", "Kustomization", "v1",
          from_pydantic(flux_kustomize.Kustomization, "kustomize.toolkit.fluxcd.io/v1",
                        "Kustomization"))
    write("karpenter.sh", "NodePool", "v1",
          kopium_resource("karpenter_sh/v1/nodepools.rs", "NodePoolSpec", "karpenter.sh/v1",
                          "NodePool"))
    write("karpenter.k8s.aws", "EC2NodeClass", "v1",
          kopium_resource("karpenter_k8s_aws/v1/ec2nodeclasses.rs", "EC2NodeClassSpec",
                          "karpenter.k8s.aws/v1", "EC2NodeClass"))


if __name__ == "__main__":
    main()
