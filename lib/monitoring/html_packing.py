"""Text packed into a page gzip-compressed and base64-encoded, unpacked by the browser.

The pages under REPORTS_DIR must open from disk, offline, so they carry their JavaScript libraries and
data themselves (or share one file beside them). Packed, plotly.js takes 1.4 MB instead of 3.6 MB and a
report's JSON a tenth of its size; the browser unpacks it with `DecompressionStream`.
"""

from __future__ import annotations

import base64
import gzip

# `unpackText(base64)`: the packed text, in the page.
UNPACK_JS = """
async function unpackText(packed) {
  const bytes = Uint8Array.from(atob(packed.trim()), (c) => c.charCodeAt(0));
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  return await new Response(stream).text();
}
function runScript(text) {
  const script = document.createElement("script");
  script.textContent = text;
  document.head.appendChild(script);
}
"""


def pack(text: str) -> str:
    """`text` gzip-compressed (reproducibly: no timestamp) and base64-encoded."""
    return base64.b64encode(gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0)).decode("ascii")


def unpack(packed: str) -> str:
    """The inverse of `pack`, as the page's `unpackText` does it."""
    return gzip.decompress(base64.b64decode(packed)).decode("utf-8")
