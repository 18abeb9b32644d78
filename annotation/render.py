"""Text as annotators see it: markdown rendered to HTML with every raw HTML tag escaped, so a hostile prompt or
response shows as text and never runs. Links with javascript:, vbscript:, file: or data: targets are refused by
markdown-it's link check and stay as text; the pages' Content-Security-Policy is the second wall."""

from __future__ import annotations

from html import escape

from markdown_it import MarkdownIt

_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable(
    ["table", "strikethrough"]
)


def markdown_html(text: str) -> str:
    return _markdown.render(text)


def prompt_html(prompt: str | list[dict[str, str]]) -> str:
    if isinstance(prompt, str):
        return markdown_html(prompt)
    turns = (
        f'<section class="turn turn-{escape(m["role"])}"><h4>{escape(m["role"])}</h4>{markdown_html(m["content"])}'
        "</section>"
        for m in prompt
    )
    return "".join(turns)
