"""Skill metadata parsing (local/skill_metadata.py): SKILL.md frontmatter and
agents/openai.yaml, with the reference's rules (checked against codex 0.171)."""

from __future__ import annotations

import pytest

from execserver.local.skill_metadata import (
    MetadataError,
    SkillFrontmatter,
    parse_frontmatter,
    parse_openai_yaml,
)
from execserver.protocol.discovery import SkillDependencies, SkillPolicy, SkillToolDependency


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("---\nname: a\ndescription: d\n---\nbody\n", SkillFrontmatter("a", "d", None)),
        ("---\ndescription: no name\n---\n", SkillFrontmatter("dir", "no name", None)),
        ("---\nname: 123\ndescription: true\n---\n", SkillFrontmatter("123", "true", None)),
        (
            "---\nname: a\ndescription: |\n  line one\n  line two\nmetadata:\n"
            "  short-description: 5\n---\n",
            SkillFrontmatter("a", "line one line two", "5"),
        ),
        ("---\r\nname: a\r\ndescription: d\r\n---\r\n", SkillFrontmatter("a", "d", None)),
        (
            "--- \nname:   spaced   name  \ndescription: d\n---  \n",
            SkillFrontmatter("spaced name", "d", None),
        ),
        (
            "---\nname: " + "n" * 64 + "\ndescription: " + "d" * 2000 + "\n---\n",
            SkillFrontmatter("n" * 64, "d" * 2000, None),
        ),
    ],
)
def test_frontmatter_fields(text: str, expected: SkillFrontmatter) -> None:
    """Scalars keep their written text, whitespace collapses, the name defaults to the
    directory's, CRLF and trailing blanks on the fences are fine."""
    assert parse_frontmatter(text, "dir") == expected


@pytest.mark.parametrize(
    "text",
    [
        "just text\n",
        "---\nname: a\n---\n",
        "---\nname: [unclosed\n---\n",
        "---\nname: [x]\ndescription: d\n---\n",
        "---\nname: " + "m" * 65 + "\ndescription: d\n---\n",
        "---\nname: ~\ndescription: null\n---\n",
        "---\nname: ''\ndescription: ''\n---\n",
        "\ufeff---\nname: a\ndescription: d\n---\n",
        "---\nname: a\ndescription: d\n",
    ],
)
def test_unusable_frontmatter(text: str) -> None:
    """No frontmatter, no description, bad YAML, a non-string name, a name over 64
    characters, empty fields, a byte order mark or no closing fence: the skill is skipped."""
    with pytest.raises(MetadataError):
        parse_frontmatter(text, "dir")


def test_openai_yaml_dependencies_and_policy() -> None:
    """Tools need `type` and `value` (others are dropped); missing members are null."""
    text = (
        "dependencies:\n  tools:\n    - type: mcp\n      value: github\n      description: G\n"
        "      transport: streamable_http\n      url: https://example.com/mcp\n"
        "      oauth_callback_port: 1234\n    - value: no-type\n    - type: env_var\n"
        "      value: TOKEN\npolicy:\n  allow_implicit_invocation: false\n"
        "  products: [codex, chatgpt]\n"
    )
    dependencies, policy = parse_openai_yaml(text)
    assert dependencies == SkillDependencies(
        tools=[
            SkillToolDependency(
                type="mcp",
                value="github",
                description="G",
                transport="streamable_http",
                command=None,
                url="https://example.com/mcp",
                oauth_callback_port=None,  # never filled by the reference
            ),
            SkillToolDependency(
                type="env_var",
                value="TOKEN",
                description=None,
                transport=None,
                command=None,
                url=None,
                oauth_callback_port=None,
            ),
        ]
    )
    assert policy == SkillPolicy(allow_implicit_invocation=False, products=["codex", "chatgpt"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "policy: {}\ndependencies: {}\n",
            (None, SkillPolicy(allow_implicit_invocation=None, products=[])),
        ),
        ("dependencies:\n  tools: []\n", (None, None)),
        ("policy:\n  allow_implicit_invocation: yes\n", (None, None)),
        ("policy: [\n", (None, None)),
        ("", (None, None)),
    ],
)
def test_openai_yaml_edge_cases(text: str, expected: tuple[object, object]) -> None:
    """An empty policy is kept, no tools means no dependencies; YAML 1.1 booleans (`yes`),
    bad YAML and an empty file make the whole file count for nothing."""
    assert parse_openai_yaml(text) == expected
