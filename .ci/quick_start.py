"""Print the README's quick-start commands, one a line, for .ci/run to run verbatim.

They are the lines of the fenced ``bash`` block right after the
``<!-- quick-start -->`` marker in README.md.  Exits non-zero, saying why, if
the marker or block is missing.
"""

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def commands(text):
    """The non-blank lines of the quick-start block of ``text``, or raise ValueError."""
    m = re.search(r"<!-- quick-start -->\s*```bash\n(.*?)```", text, re.S)
    if m is None:
        raise ValueError("README.md has no '<!-- quick-start -->' marker followed by a ```bash block")
    return [line for line in m.group(1).splitlines() if line.strip()]


if __name__ == "__main__":
    try:
        print("\n".join(commands(README.read_text(encoding="utf-8"))))
    except ValueError as exc:
        sys.exit(str(exc))
