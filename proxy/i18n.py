"""The pages' words in every language: one JSON file per language in ``proxy/languages/``.

A file is named for its BCP 47 tag (``en.json``, ``zh-CN.json``) and holds nested objects of
strings; adding a language means adding one file with the same keys as ``en.json`` (a test
checks that every file has every key and no other). English is the fallback for a missing one.

The language of a page: the one asked for (the mint's ``language``, the page's ``lang``
parameter), else the browser's preferences (``Accept-Language``), else English.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

LANGUAGES_DIR = Path(__file__).resolve().parent / "languages"
DEFAULT = "en"
# Only these sections go into a console page (the JS switches between them live).
CONSOLE_SECTIONS = ("console", "keyNames", "closeCodes")
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_MAX_PREFERENCES = 20


@functools.cache
def tables() -> dict[str, dict[str, Any]]:
    """Every language's table by tag, English first."""
    found = {
        path.stem: json.loads(path.read_text("utf-8")) for path in LANGUAGES_DIR.glob("*.json")
    }
    if DEFAULT not in found:
        raise RuntimeError(f"{LANGUAGES_DIR / (DEFAULT + '.json')} is missing")
    return {DEFAULT: found.pop(DEFAULT), **dict(sorted(found.items()))}


def available() -> list[str]:
    return list(tables())


def names() -> dict[str, str]:
    """Each language's own name for itself, by tag."""
    return {tag: str(table["language"]["name"]) for tag, table in tables().items()}


def canonical(tag: object) -> str | None:
    """The available tag that ``tag`` names exactly (ignoring case), else None."""
    if not isinstance(tag, str):
        return None
    wanted = tag.strip().replace("_", "-").lower()
    return next((t for t in tables() if t.lower() == wanted), None)


def negotiate(preferences: Iterable[str]) -> str:
    """The first preference available exactly, else by its primary subtag (``zh-TW`` takes
    ``zh-CN`` when that is all there is), else English."""
    wanted = [p for p in preferences if p][:_MAX_PREFERENCES]
    for tag in wanted:
        if (found := canonical(tag)) is not None:
            return found
    for tag in wanted:
        primary = tag.strip().split("-")[0].lower()
        for available_tag in tables():
            if available_tag.split("-")[0].lower() == primary:
                return available_tag
    return DEFAULT


def accept_language(header: str) -> list[str]:
    """The tags of an ``Accept-Language`` header, most wanted first (``*`` and q=0 left out)."""
    weighted: list[tuple[float, int, str]] = []
    for index, part in enumerate(header.split(",")[:_MAX_PREFERENCES]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        match = re.search(r"q=([^;\s]*)", params)
        if match:
            try:
                quality = float(match[1])
            except ValueError:
                continue
        if tag and tag != "*" and quality > 0:
            weighted.append((-quality, index, tag.strip()))
    return [tag for _, _, tag in sorted(weighted)]


def flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": "x"}}`` as ``{"a.b": "x"}``."""
    flat: dict[str, str] = {}
    for key, value in table.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat


@functools.cache
def _flat(language: str) -> dict[str, str]:
    return flatten(tables()[language])


def section(language: str, name: str) -> dict[str, str]:
    """One section's words in ``language``, flattened, keys without the section's name (what
    a page's script gets: ``section("zh-CN", "demo")["openTab"]``)."""
    prefix = f"{name}."
    return {k.removeprefix(prefix): v for k, v in _flat(language).items() if k.startswith(prefix)}


def text(language: str, key: str, **values: object) -> str:
    """The sentence ``key`` (``"console.reconnect"``) in ``language``, placeholders filled."""
    sentence = _flat(language).get(key) if language in tables() else None
    if sentence is None:
        sentence = _flat(DEFAULT)[key]
    return _PLACEHOLDER.sub(lambda m: str(values.get(m[1], m[0])), sentence)


def translator(language: str) -> functools.partial[str]:
    """``t("console.reconnect")`` for templates."""
    return functools.partial(text, language)


def close_messages(language: str) -> dict[int, str]:
    """What the console page says for each close code, in ``language``."""
    table = tables().get(language, tables()[DEFAULT])["closeCodes"]
    return {int(code): str(sentence) for code, sentence in table.items()}


def console_tables() -> dict[str, dict[str, str]]:
    """What a console page needs of every language, flattened: it switches between them live."""
    return {
        tag: {k: v for k, v in _flat(tag).items() if k.split(".")[0] in CONSOLE_SECTIONS}
        for tag in tables()
    }
