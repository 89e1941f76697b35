#!/usr/bin/env python3
"""Validates rendered Kubernetes manifests strictly, offline.

Every object of every YAML stream given (kubectl kustomize output) must match a schema:
built-in kinds the Kubernetes OpenAPI schemas of `kubernetes-validate` (strict: unknown
fields are errors), custom resources the checked-in schemas under deploy/k8s/schemas/
(<group>/<kind>_<version>.json, see generate.py there). An object whose kind has no schema
is an error, not a skip. Prints one line per stream and every error; exits 1 on any error.

Usage: validate.py [--kubernetes-version 1.35] [--schemas DIR] FILE...
Runs in the deploy tools' virtual environment (scripts/setup.sh: kubernetes-validate,
jsonschema, PyYAML).
"""

import argparse
import json
import os
import sys

import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

HERE = os.path.dirname(os.path.abspath(__file__))


def custom_schemas(root):
    """{(apiVersion, kind): schema} from <root>/<group>/<kind>_<version>.json."""
    out = {}
    for group in sorted(os.listdir(root)):
        folder = os.path.join(root, group)
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            if not name.endswith(".json"):
                continue
            with open(os.path.join(folder, name)) as f:
                schema = json.load(f)
            props = schema["properties"]
            out[(props["apiVersion"]["const"], props["kind"]["const"])] = schema
    return out


def where(error):
    """The error's place and message; for anyOf/oneOf, the deepest alternative's (the one
    that got furthest into the object says what is wrong)."""
    while error.context:
        error = max(error.context, key=lambda e: len(list(e.absolute_path)))
    path = "/".join(str(p) for p in error.absolute_path)
    return f"{path or '(top)'}: {error.message}"


def validate(doc, version, customs):
    """Error messages for one object (empty when valid)."""
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key in customs:
        validator = jsonschema.Draft202012Validator(customs[key])
        return [where(e) for e in sorted(validator.iter_errors(doc), key=str)]
    try:
        kubernetes_validate.validate(doc, version, strict=True)
        return []
    except SchemaNotFoundError:
        return [f"no schema for {key[0]} {key[1]}: add it under deploy/k8s/schemas/"]
    except ValidationError as e:
        return [where(e)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--kubernetes-version", default="1.35")
    ap.add_argument("--schemas", default=os.path.join(HERE, "schemas"))
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    customs = custom_schemas(args.schemas)
    failed = 0
    for path in args.files:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        n_custom = 0
        for doc in docs:
            n_custom += (doc.get("apiVersion"), doc.get("kind")) in customs
            name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            for err in validate(doc, args.kubernetes_version, customs):
                print(f"INVALID {path}: {name}: {err}")
                failed += 1
        print(f"{path}: {len(docs)} objects ({n_custom} custom resources) checked "
              f"against Kubernetes {args.kubernetes_version}")
    if failed:
        print(f"{failed} error(s)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
