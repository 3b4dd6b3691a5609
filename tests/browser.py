"""Headless Chromium for the report tests: layout checks run inside the page, and screenshots.

No driver library: the page gets a small checking script, Chromium runs it with --dump-dom, and
the script writes its findings as JSON into the dumped DOM.
"""
from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess

CHROMIUM = (os.environ.get("GA_WALS_CHROMIUM") or shutil.which("chromium")
            or shutil.which("chromium-browser") or shutil.which("google-chrome"))
MISSING = ("no Chromium on this machine: `apt-get install chromium` (Debian's package) runs the "
           "browser checks of report.html; .ci/run installs it")
# This machine's network is closed: without these, Chromium keeps trying to reach Google.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--mute-audio"]

CHECK = """<script id="layout-check-script">
async function layoutCheck() {
  const view = document.documentElement.clientWidth;
  const out = {viewport: view, scrollWidth: document.documentElement.scrollWidth,
               height: document.documentElement.scrollHeight, overflow: [], overlaps: [],
               outside: [], images: [], svgs: document.querySelectorAll('svg').length};
  const name = e => e.tagName.toLowerCase() + ': ' + (e.textContent || '').trim().slice(0, 50);
  for (const e of document.body.querySelectorAll('*')) {
    if (e.id === 'layout-check' || e.closest('script')) continue;
    const r = e.getBoundingClientRect();
    if (r.width && (r.right > view + 1 || r.left < -1)) out.overflow.push(name(e));
    // text spilling out of its own box (the box itself may fit)
    else if (!(e instanceof SVGElement) && e.clientWidth && e.scrollWidth > e.clientWidth + 1)
      out.overflow.push('spills ' + name(e));
  }
  for (const svg of document.querySelectorAll('svg')) {
    const box = svg.getBoundingClientRect();
    const texts = [...svg.querySelectorAll('text')].filter(t => t.textContent.trim())
      .map(t => [t.textContent.trim(), t.getBoundingClientRect()]);
    for (const [label, r] of texts)
      if (r.left < box.left - 1 || r.right > box.right + 1 || r.top < box.top - 1 ||
          r.bottom > box.bottom + 1) out.outside.push(label);
    for (let i = 0; i < texts.length; i++) for (let j = i + 1; j < texts.length; j++) {
      const [a, ra] = texts[i], [b, rb] = texts[j];
      const w = Math.min(ra.right, rb.right) - Math.max(ra.left, rb.left);
      const h = Math.min(ra.bottom, rb.bottom) - Math.max(ra.top, rb.top);
      if (w > 0.5 && h > 0.5) out.overlaps.push(a + ' / ' + b);
    }
  }
  const sources = [...document.images].map(i => i.src).concat(
    [...document.querySelectorAll('image')].map(i => i.getAttribute('xlink:href') || i.getAttribute('href')));
  out.images = await Promise.all(sources.map(src => new Promise(done => {
    const img = new Image();
    img.onload = () => done({src: src.slice(0, 40), ok: img.naturalWidth > 0});
    img.onerror = () => done({src: src.slice(0, 40), ok: false});
    img.src = src;
  })));
  const pre = document.createElement('pre');
  pre.id = 'layout-check';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
}
window.addEventListener('load', layoutCheck);
</script>"""


def _chromium(args: list[str], profile: str) -> str:
    done = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120)
    if done.returncode:
        raise RuntimeError(f"chromium failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def check_layout(page: str, width: int, scratch: str) -> dict:
    """The page's layout findings at a window `width` px wide (see CHECK)."""
    checked = os.path.join(scratch, f"checked-{width}-{os.path.basename(page)}")
    with open(page, encoding="utf-8") as f:
        text = f.read()
    with open(checked, "w", encoding="utf-8") as f:
        f.write(text.replace("</body>", CHECK + "</body>"))
    dom = _chromium(["--virtual-time-budget=10000", f"--window-size={width},900",
                     "--dump-dom", "file://" + os.path.abspath(checked)],
                    os.path.join(scratch, "profile"))
    found = re.search(r'<pre id="layout-check">(.*?)</pre>', dom, re.S)
    if not found:
        raise AssertionError(f"the checking script did not run in {page}: {dom[-500:]}")
    return json.loads(html.unescape(found.group(1)))


def screenshot(page: str, width: int, height: int, path: str, scratch: str) -> str:
    """A PNG of the page at `width`: its top `height` px, at most 16,000 (Chromium's limit)."""
    _chromium([f"--window-size={width},{min(height, 16000)}", f"--screenshot={path}",
               "file://" + os.path.abspath(page)], os.path.join(scratch, "profile"))
    return path
