"""Key names for the console page's key combinations (``"Ctrl+Alt+Del"``), and what each key
sends: its X11 keysym (VNC), its DOM ``code`` (noVNC turns it into a scancode for QEMU's extended
key events) and its PC scancode, set 1 (SPICE; extended keys as ``0xE0xx``).

The page gets the keys of its menu from here, so ``[page] key_combos`` can name any key below.
"""

from __future__ import annotations

from typing import NamedTuple


class Key(NamedTuple):
    keysym: int
    code: str
    scancode: int


def _letters() -> dict[str, Key]:
    rows = (("QWERTYUIOP", 0x10), ("ASDFGHJKL", 0x1E), ("ZXCVBNM", 0x2C))
    return {
        char: Key(ord(char.lower()), f"Key{char}", start + i)
        for letters, start in rows
        for i, char in enumerate(letters)
    }


def _digits() -> dict[str, Key]:
    return {str(n): Key(0x30 + n, f"Digit{n}", 0x0B if n == 0 else 0x01 + n) for n in range(10)}


def _function_keys() -> dict[str, Key]:
    scancodes = [0x3B + i for i in range(10)] + [0x57, 0x58]
    return {f"F{n}": Key(0xFFBE + n - 1, f"F{n}", scancodes[n - 1]) for n in range(1, 13)}


KEYS: dict[str, Key] = {
    "Ctrl": Key(0xFFE3, "ControlLeft", 0x1D),
    "Alt": Key(0xFFE9, "AltLeft", 0x38),
    "Shift": Key(0xFFE1, "ShiftLeft", 0x2A),
    "Super": Key(0xFFEB, "MetaLeft", 0xE05B),
    "AltGr": Key(0xFE03, "AltRight", 0xE038),
    "Del": Key(0xFFFF, "Delete", 0xE053),
    "Backspace": Key(0xFF08, "Backspace", 0x0E),
    "Tab": Key(0xFF09, "Tab", 0x0F),
    "Esc": Key(0xFF1B, "Escape", 0x01),
    "Enter": Key(0xFF0D, "Enter", 0x1C),
    "Space": Key(0x0020, "Space", 0x39),
    "Insert": Key(0xFF63, "Insert", 0xE052),
    "Home": Key(0xFF50, "Home", 0xE047),
    "End": Key(0xFF57, "End", 0xE04F),
    "PageUp": Key(0xFF55, "PageUp", 0xE049),
    "PageDown": Key(0xFF56, "PageDown", 0xE051),
    "Up": Key(0xFF52, "ArrowUp", 0xE048),
    "Down": Key(0xFF54, "ArrowDown", 0xE050),
    "Left": Key(0xFF51, "ArrowLeft", 0xE04B),
    "Right": Key(0xFF53, "ArrowRight", 0xE04D),
    "PrintScreen": Key(0xFF61, "PrintScreen", 0xE037),
    "Menu": Key(0xFF67, "ContextMenu", 0xE05D),
    **_function_keys(),
    **_letters(),
    **_digits(),
}

# Other spellings people write; they parse to the names above.
ALIASES: dict[str, str] = {
    "control": "Ctrl",
    "delete": "Del",
    "escape": "Esc",
    "return": "Enter",
    "win": "Super",
    "windows": "Super",
    "meta": "Super",
    "cmd": "Super",
    "prtsc": "PrintScreen",
    "print": "PrintScreen",
    "ins": "Insert",
    "pgup": "PageUp",
    "pgdn": "PageDown",
    "bksp": "Backspace",
}
MODIFIERS = ("Ctrl", "Alt", "Shift", "Super")
_BY_LOWER = {name.lower(): name for name in KEYS} | ALIASES
_NAMED = [name for name in KEYS if len(name) > 1 and not name[1:].isdigit()]

# The menu every console page has; [page] key_combos adds more after these.
BUILTIN_COMBOS: tuple[tuple[str, ...], ...] = (
    ("Ctrl", "Alt", "Del"),
    ("Ctrl", "Alt", "Backspace"),
    ("Alt", "Tab"),
    ("Alt", "F4"),
    ("Super",),
    ("PrintScreen",),
    ("Ctrl", "Esc"),
    *(("Ctrl", "Alt", f"F{n}") for n in range(1, 13)),
)
MAX_KEYS_PER_COMBO = 6
# The extra-keys bar (touch devices, or on request): keys a phone's keyboard lacks; the
# modifiers there stay pressed until pressed again.
EXTRA_KEYS_BAR = (
    "Esc",
    "Tab",
    "Left",
    "Up",
    "Down",
    "Right",
    "Home",
    "End",
    "PageUp",
    "PageDown",
    "Del",
)


def parse_combo(text: str) -> tuple[str, ...]:
    """``"ctrl+shift+esc"`` as ``("Ctrl", "Shift", "Esc")``; ValueError names a key it does not
    know."""
    parts = [part.strip() for part in text.split("+")]
    if not text.strip() or any(not part for part in parts):
        raise ValueError(f"{text!r} is not a key combination like 'Ctrl+Shift+Esc'")
    if len(parts) > MAX_KEYS_PER_COMBO:
        raise ValueError(f"{text!r} has more than {MAX_KEYS_PER_COMBO} keys")
    names = []
    for part in parts:
        name = _BY_LOWER.get(part.lower())
        if name is None:
            raise ValueError(
                f"{text!r}: unknown key {part!r} (known: {', '.join(_NAMED)}, A-Z, 0-9, F1-F12)"
            )
        names.append(name)
    return tuple(names)


def page_keys(configured: tuple[str, ...]) -> dict[str, object]:
    """What the console page's key menu needs: each combination as key names, and the keys."""
    extra = [parse_combo(text) for text in configured]
    combos = [*BUILTIN_COMBOS, *(c for c in extra if c not in BUILTIN_COMBOS)]
    return {
        "combos": [list(combo) for combo in combos],
        "configured": len(combos) - len(BUILTIN_COMBOS),
        "modifiers": list(MODIFIERS),
        "bar": list(EXTRA_KEYS_BAR),
        # All of them: the on-screen keyboard sends letters, digits, Enter and Backspace too.
        "keys": {name: list(key) for name, key in KEYS.items()},
    }
