"""docs/configuration.md, generated from the configuration schema's descriptions.

``python -m corereg config-doc`` rewrites the page; a test fails when the page and
the schema disagree, or when a schema property has no description.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

HEADER = """# Configuration reference

`config.yaml` is the paper's configuration.  Presets in `workflow/presets/` are
merged over it (dictionaries key by key, lists replaced): `demo.yaml` (synthetic
phantoms on a CPU, minutes) and `tiny.yaml` (the smallest run of every rule, for
the tests); give your own with `--configfile my.yaml`.  The schema
`workflow/schemas/config.schema.yaml` checks the merged configuration when
Snakemake starts.

This page is generated from that schema (`python -m corereg config-doc`); a test
keeps the two in step.  `<name>` stands for a key you choose (a dataset, a
method, a variant).
"""


def _resolve(node: dict, root: dict) -> dict:
    ref = node.get("$ref")
    if ref:
        target = root
        for part in ref.lstrip("#/").split("/"):
            target = target[part]
        return {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _kind(node: dict, root: dict) -> str:
    node = _resolve(node, root)
    if "enum" in node:
        return ", ".join("null" if v is None else f"`{v}`" for v in node["enum"])
    if "const" in node:
        return f"`{node['const']}`"
    if "oneOf" in node:
        return " or ".join(_kind(n, root) for n in node["oneOf"])
    t = node.get("type", "object" if "properties" in node else "")
    types = t if isinstance(t, list) else [t]
    out = []
    for ty in types:
        if ty == "array":
            items = node.get("items", {})
            inner = _kind(items, root) if items else "value"
            size = ""
            if node.get("minItems") is not None and node.get("minItems") == node.get("maxItems"):
                size = f"{node['minItems']} × "
            out.append(f"list of {size}{inner}")
        else:
            out.append(ty or "any")
    text = " or ".join(out)
    bounds = []
    for key, sym in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤")):
        if key in node:
            bounds.append(f"{sym} {node[key]}")
    if "pattern" in node:
        bounds.append(f"matching `{node['pattern']}`")
    return text + (f" ({', '.join(bounds)})" if bounds else "")


def _default(node: dict) -> str:
    if "default" not in node:
        return ""
    return f"`{json.dumps(node['default'])}`"


def walk(node: dict, root: dict, path: str, rows: list, missing: list) -> None:
    """Rows of (key, kind, default, description) for ``node`` and everything below it."""
    node = _resolve(node, root)
    props = node.get("properties", {})
    first_of: dict[str, str] = {}  # a shared definition is spelt out once per parent
    for name, child in props.items():
        key = f"{path}.{name}" if path else name
        resolved = _resolve(child, root)
        desc = child.get("description") or resolved.get("description")
        if not desc:
            missing.append(key)
        ref = child.get("$ref")
        if ref in first_of:
            rows.append((key, "object", "", f"{desc or ''} Same fields as `{first_of[ref]}`."))
            continue
        if ref and resolved.get("properties"):
            first_of[ref] = key
        rows.append((key, _kind(child, root), _default(resolved), desc or ""))
        walk(child, root, key, rows, missing)
        items = resolved.get("items")
        if isinstance(items, dict) and _resolve(items, root).get("properties"):
            walk(items, root, f"{key}[]", rows, missing)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict) and _resolve(extra, root).get("properties"):
        walk(extra, root, f"{path}.<name>", rows, missing)


def _row(key, kind, default, desc) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ").strip()

    return f"| `{key}` | {cell(kind)} | {default} | {cell(desc)} |"


TABLE_HEAD = ["| key | value | default | meaning |", "|---|---|---|---|"]


def render(schema: dict) -> tuple[str, list[str]]:
    """The Markdown page and the keys that lack a description."""
    rows: list = []
    missing: list = []
    walk(schema, schema, "", rows, missing)
    nested = {k.split(".")[0] for k, *_ in rows if "." in k}
    general = [r for r in rows if "." not in r[0] and r[0] not in nested]
    lines = [HEADER, "## General", "", *TABLE_HEAD, *(_row(*r) for r in general)]
    for top in schema["properties"]:
        if top not in nested:
            continue
        desc = _resolve(schema["properties"][top], schema).get("description", "")
        lines += ["", f"## `{top}`", "", desc, "", *TABLE_HEAD]
        lines += [_row(*r) for r in rows if r[0].split(".")[0] == top and r[0] != top]
    lines += _method_params(schema, missing)
    lines += _registered()
    return "\n".join(lines) + "\n", missing


def _registered() -> list[str]:
    """The names each registry accepts (method kinds, source kinds, artifact types)."""
    from corereg.adapters import ARTIFACT_TYPES, METHOD_KINDS, SOURCE_KINDS

    lines = [
        "",
        "## Registered kinds",
        "",
        "The values `methods.<name>.kind`, `datasets.<name>.source.kind` and "
        "`artifacts.<name>.type` accept (docs/architecture.md says how to add one).",
    ]
    for title, registry in (
        ("`methods.<name>.kind`", METHOD_KINDS),
        ("`datasets.<name>.source.kind`", SOURCE_KINDS),
        ("`artifacts.<name>.type`", ARTIFACT_TYPES),
    ):
        lines += ["", f"### {title}", "", "| name | what it is |", "|---|---|"]
        for name in registry:
            adapter = registry[name]
            doc = " ".join((type(adapter).__doc__ or "").split("\n\n")[0].split())
            doc = doc.replace("``", "`")
            lines.append(f"| `{name}` | {doc or adapter.missing} |")
    return lines


def _method_params(schema: dict, missing: list) -> list[str]:
    """One table per method kind: the keys of ``methods.<name>.params`` (and its variants)."""
    kinds = schema.get("$defs", {}).get("method_params", {})
    if not kinds:
        return []
    lines = [
        "",
        "## `methods.<name>.params` by kind",
        "",
        "A method's `params` and each of its `variants` are checked against its kind's keys "
        "when Snakemake starts; a key left out takes the default shown.",
    ]
    for kind, node in kinds.items():
        rows: list = []
        walk(node, schema, "params", rows, missing)
        lines += ["", f"### kind `{kind}`", "", node.get("description", "")]
        if rows:
            lines += ["", *TABLE_HEAD, *(_row(*r) for r in rows)]
    return lines


def schema_path(root: Path) -> Path:
    return root / "workflow" / "schemas" / "config.schema.yaml"


def load_schema(root: Path) -> dict:
    return yaml.safe_load(schema_path(root).read_text())
