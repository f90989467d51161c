"""Parse a skill's metadata: the YAML frontmatter of `SKILL.md` and its `agents/openai.yaml`.

The reference reads both with a strict YAML 1.2 deserializer, so this module reads YAML node
trees (PyYAML's composer) and converts them itself: a scalar is its text as written (`123`
and `true` are the strings "123" and "true"), `~`/`null`/empty is null, and a boolean is only
`true`/`false` (`yes` is not one). No I/O: callers pass the text.

Frontmatter: the file starts with a `---` line and the YAML mapping ends at the next `---`
line (surrounding blanks and CRLF allowed, a byte order mark not). `description` is required,
`name` defaults to the skill's directory name and is at most 64 characters; runs of whitespace
in both are collapsed to one space. `metadata.short-description` is optional.

`agents/openai.yaml`: `dependencies.tools` (entries need `type` and `value`; others dropped)
and `policy` (`allow_implicit_invocation`, `products`). A file that does not parse or has a
member of the wrong type contributes nothing, silently.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from execserver.protocol.discovery import SkillDependencies, SkillPolicy, SkillToolDependency

MAX_NAME_CHARS = 64

_NULL_TAG = "tag:yaml.org,2002:null"
_BOOLS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}


class MetadataError(ValueError):
    """The metadata cannot be used (the skill is skipped with a warning)."""


@dataclass(frozen=True, slots=True)
class SkillFrontmatter:
    name: str
    description: str
    short_description: str | None


def _compose(text: str) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise MetadataError(f"invalid YAML: {exc}") from None


def _mapping(node: yaml.Node | None, what: str) -> dict[str, yaml.Node]:
    if node is None or _is_null(node):
        return {}
    if not isinstance(node, yaml.MappingNode):
        raise MetadataError(f"{what} must be a mapping")
    result: dict[str, yaml.Node] = {}
    for key, value in node.value:
        if isinstance(key, yaml.ScalarNode):
            result[key.value] = value
    return result


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == _NULL_TAG


def _text(node: yaml.Node | None, what: str) -> str | None:
    """A scalar as the text written (null for a YAML null)."""
    if node is None or _is_null(node):
        return None
    if not isinstance(node, yaml.ScalarNode):
        raise MetadataError(f"{what} must be a string")
    return str(node.value)


def _bool(node: yaml.Node | None, what: str) -> bool | None:
    if node is None or _is_null(node):
        return None
    if (
        not isinstance(node, yaml.ScalarNode)
        or node.style not in (None, "")
        or node.value not in _BOOLS
    ):
        raise MetadataError(f"{what} must be a boolean")
    return _BOOLS[node.value]


def _sequence(node: yaml.Node | None, what: str) -> list[yaml.Node]:
    if node is None or _is_null(node):
        return []
    if not isinstance(node, yaml.SequenceNode):
        raise MetadataError(f"{what} must be a sequence")
    return list(node.value)


def _collapse(text: str) -> str:
    return " ".join(text.split())


def split_frontmatter(text: str) -> str:
    """The YAML between the opening and the closing `---` lines."""
    lines = text.split("\n")
    if not lines or lines[0].strip() != "---":
        raise MetadataError("missing YAML frontmatter")
    for index in range(1, len(lines)):
        if lines[index].strip() == "---":
            return "\n".join(line.removesuffix("\r") for line in lines[1:index])
    raise MetadataError("unterminated YAML frontmatter")


def parse_frontmatter(text: str, directory_name: str) -> SkillFrontmatter:
    """The skill's name and descriptions. Raises `MetadataError`."""
    fields = _mapping(_compose(split_frontmatter(text)), "frontmatter")
    raw_name = _text(fields.get("name"), "name")
    name = directory_name if raw_name is None else _collapse(raw_name)
    description = _text(fields.get("description"), "description")
    if description is None:
        raise MetadataError("missing description")
    description = _collapse(description)
    if not name or not description:
        raise MetadataError("empty name or description")
    if len(name) > MAX_NAME_CHARS:
        raise MetadataError(f"name longer than {MAX_NAME_CHARS} characters")
    metadata = _mapping(fields.get("metadata"), "metadata")
    short = _text(metadata.get("short-description"), "short-description")
    return SkillFrontmatter(name, description, None if short is None else _collapse(short))


def parse_openai_yaml(text: str) -> tuple[SkillDependencies | None, SkillPolicy | None]:
    """`dependencies` and `policy` of `agents/openai.yaml`; (None, None) if unusable."""
    try:
        return _openai_yaml(text)
    except MetadataError:
        return None, None


def _openai_yaml(text: str) -> tuple[SkillDependencies | None, SkillPolicy | None]:
    document = _mapping(_compose(text), "document")
    dependencies = None
    if "dependencies" in document and not _is_null(document["dependencies"]):
        tools: list[SkillToolDependency] = []
        deps = _mapping(document["dependencies"], "dependencies")
        for entry in _sequence(deps.get("tools"), "tools"):
            tool = _mapping(entry, "tool")
            kind = _text(tool.get("type"), "type")
            value = _text(tool.get("value"), "value")
            fields = {
                key: _text(tool.get(key), key) for key in ("description", "transport", "command")
            }
            url = _text(tool.get("url"), "url")
            if kind is None or value is None:
                continue
            tools.append(
                SkillToolDependency(
                    type=kind,
                    value=value,
                    description=fields["description"],
                    transport=fields["transport"],
                    command=fields["command"],
                    url=url,
                    # Never filled by the reference from any spelling we tried.
                    oauth_callback_port=None,
                )
            )
        dependencies = SkillDependencies(tools=tools) if tools else None
    policy = None
    if "policy" in document and not _is_null(document["policy"]):
        members = _mapping(document["policy"], "policy")
        products = [
            _text(item, "product") or "" for item in _sequence(members.get("products"), "products")
        ]
        policy = SkillPolicy(
            allow_implicit_invocation=_bool(
                members.get("allow_implicit_invocation"), "allow_implicit_invocation"
            ),
            products=products,
        )
    return dependencies, policy
