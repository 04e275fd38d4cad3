"""Render ``config.example.yaml`` from the section classes' own documentation.

The example is generated, not hand-kept, so it cannot drift from what the loader
accepts: a test checks that the committed file equals this output and validates.
"""

from __future__ import annotations

import dataclasses
import textwrap
from dataclasses import MISSING
from typing import Any

import yaml

from deskwatch_contract.configfile import _optional_inner, is_section, section_fields

HEADER = """\
# deskwatch configuration: copy to /etc/deskwatch/config.yaml and edit.
# Generated from the code's own field documentation (deskwatch example-config);
# check a file with:  deskwatch check-config /etc/deskwatch/config.yaml
# Every key is optional unless marked REQUIRED; the value shown is the default.
# Lines starting with '# key:' are optional settings shown with an example value.
"""


def _flow(value: Any) -> str:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, list):
        value = [dataclasses.asdict(v) if dataclasses.is_dataclass(v) and not isinstance(v, type) else v for v in value]
    text: str = yaml.safe_dump(value, default_flow_style=True, width=1000, sort_keys=False).strip()
    if text.endswith("\n..."):
        text = text[: -len("\n...")]
    return text.removesuffix("...").strip()


def _comment(doc: str, indent: str) -> list[str]:
    return [indent + "# " + line for line in textwrap.wrap(doc, width=88 - len(indent))]


def render_example(cls: type, indent: str = "") -> list[str]:
    lines: list[str] = []
    for f, tp in section_fields(cls):
        doc = f.metadata.get("doc", "")
        example = f.metadata.get("example")
        required = f.default is MISSING and f.default_factory is MISSING
        _, inner = _optional_inner(tp)
        if (is_section(inner) and not required) or (is_section(inner) and required):
            lines.append("")
            lines.extend(_comment(doc + (" REQUIRED." if required else ""), indent))
            lines.append(f"{indent}{f.name}:")
            lines.extend(render_example(inner, indent + "  "))
            continue
        default = (
            f.default
            if f.default is not MISSING
            else (
                f.default_factory() if f.default_factory is not MISSING else None  # type: ignore[misc]
            )
        )
        lines.extend(_comment(doc + (" REQUIRED." if required else ""), indent))
        if required:
            lines.append(f"{indent}{f.name}: {_flow(example)}")
        elif default is None:
            shown = _flow(example) if example is not None else "null"
            lines.append(f"{indent}# {f.name}: {shown}")
        else:
            lines.append(f"{indent}{f.name}: {_flow(default)}")
            if example is not None and example != default:
                lines.append(f"{indent}#   e.g. {f.name}: {_flow(example)}")
    return lines


def example_text() -> str:
    from deskwatch.config.root import Config

    body = render_example(Config)
    while body and body[0] == "":
        body.pop(0)
    return HEADER + "\n" + "\n".join(body) + "\n"
