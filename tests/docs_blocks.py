"""Read the labelled code blocks of a documentation page, so that tests can run them.

A block is labelled by an HTML comment on the line before its opening fence:

    <!-- test: app -->
    ```python
    ...
    ```

The comment is invisible on the rendered page. Every fenced block of a page that is tested this
way must carry a label (`blocks` refuses a page with an unlabelled one), so no example can be
added without a test noticing.
"""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

__all__ = ["DOCS", "blocks", "run_blocks"]

DOCS = Path(__file__).resolve().parent.parent / "docs"

_BLOCK = re.compile(
    r"^(?:<!-- test: (?P<label>[\w-]+) -->\n)?```(?P<lang>\w*)\n(?P<code>.*?)^```$",
    re.MULTILINE | re.DOTALL,
)


def blocks(page: str) -> dict[str, tuple[str, str]]:
    """Return `{label: (language, code)}` for every fenced block of `docs/<page>`, in page order.

    Raises:
        ValueError: a block has no label, or two blocks share one.
    """
    text = (DOCS / page).read_text(encoding="utf-8")
    found: dict[str, tuple[str, str]] = {}
    for match in _BLOCK.finditer(text):
        label = match["label"]
        if label is None:
            line = text.count("\n", 0, match.start()) + 1
            raise ValueError(f"docs/{page}:{line}: a code block has no <!-- test: NAME --> label.")
        if label in found:
            raise ValueError(f"docs/{page}: two code blocks are labelled {label!r}.")
        found[label] = (match["lang"], match["code"])
    return found


def run_blocks(page: str, *labels: str, name: str = "docs_example") -> types.ModuleType:
    """Execute the Python blocks `labels` of `docs/<page>`, in order, as one fresh module.

    The module is registered in `sys.modules` under `name` while the blocks run (FastAPI and
    pydantic look a function's module up to resolve its annotations), so functions defined in
    the blocks are named `name.function` in afterward's logs.
    """
    page_blocks = blocks(page)
    module = types.ModuleType(name)
    sys.modules[name] = module
    for label in labels:
        language, code = page_blocks[label]
        if language != "python":
            raise ValueError(f"docs/{page}: block {label!r} is {language!r}, not python.")
        exec(compile(code, f"docs/{page}:{label}", "exec"), module.__dict__)
    return module
