"""Produce README.md from the front page, nbs/index.ipynb (nbdev's own README step needs Quarto, which is not
installable here).

    .venv/bin/python tools/make_readme.py           # write README.md (and the images its outputs show, in docs/)
    .venv/bin/python tools/make_readme.py --check   # fail when README.md is not what index.ipynb produces

The rules, kept small so that the result is predictable:
- a markdown cell is copied verbatim; links relative to `nbs/` (`../docs/x.png`) become relative to the root;
- a code cell becomes a ```python block without its `#|` directive lines, followed by its outputs:
  text/markdown verbatim (a table; its headings two levels down, so that `# Evaluation` sits below the
  page's own sections), an image as a file in `docs/` linked from README (named by the cell's
  `#| label: NAME` as `docs/NAME.png`, else by its content; its alt text from `#| fig-alt:`), any other text (printed lines, a value's repr)
  as a plain ``` block; stderr (warnings) is left out;
- `#| hide` leaves a cell and its outputs out, `#| echo: false` shows only its outputs, `#| output: false`
  only its code (Quarto's meanings).
"""
from __future__ import annotations
import argparse, base64, hashlib, json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INDEX, README, DOCS = ROOT / "nbs" / "index.ipynb", ROOT / "README.md", ROOT / "docs"
HEADER = "<!-- Produced from nbs/index.ipynb by tools/make_readme.py: edit the notebook, then run `make export`. -->\n\n"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_DIRECTIVE = re.compile(r"^\s*#\|\s*([\w-]+)\s*:?\s*(.*?)\s*$")


def _text(x) -> str:
    return "".join(x) if isinstance(x, list) else (x or "")


def directives(src: str) -> dict:
    "The `#| name: value` lines at the top of a code cell, as {name: value} (a bare flag has value '')."
    out = {}
    for line in src.splitlines():
        m = _DIRECTIVE.match(line)
        if not m: break
        out[m.group(1)] = m.group(2)
    return out


def _code(src: str) -> str:
    return "\n".join(l for l in src.splitlines() if not _DIRECTIVE.match(l)).strip("\n")


def _rebase_links(md: str) -> str:
    "Links written relative to nbs/ (where the notebook is), made relative to the repository root."
    return re.sub(r"(\]\(|src=\")\.\./", r"\1", md)


def _block(text: str, lang: str = "") -> str:
    return f"```{lang}\n{text.rstrip()}\n```"


def _outputs(cell: dict, label: str | None, images: dict, alt: str | None = None) -> list[str]:
    "README pieces for a code cell's outputs; image files go into `images` ({relative path: bytes})."
    parts, plain = [], []
    def flush():
        if plain: parts.append(_block(_ANSI.sub("", "".join(plain))))
        plain.clear()
    for o in cell.get("outputs", []):
        if o["output_type"] == "stream":
            if o.get("name") == "stdout": plain.append(_text(o.get("text")))
            continue
        if o["output_type"] == "error": raise SystemExit(f"{INDEX.name}: a cell kept an error output; run it again")
        data = o.get("data", {})
        if "image/png" in data:
            flush()
            png = base64.b64decode(_text(data["image/png"]))
            n = sum(k.startswith(f"docs/{label}") for k in images) if label else 0   # a second figure: NAME-1
            name = f"{label}{'-' + str(n) if n else ''}" if label else f"index-{hashlib.sha1(png).hexdigest()[:10]}"
            images[f"docs/{name}.png"] = png
            parts.append(f"![{alt or label or 'figure'}](docs/{name}.png)")
        elif "text/markdown" in data:
            flush()
            parts.append(re.sub(r"(?m)^(#{1,4}) ", r"##\1 ", _text(data["text/markdown"]).strip()))
        elif "text/plain" in data:
            plain.append(_text(data["text/plain"]).rstrip("\n") + "\n")
    flush()
    return parts


def produce(nb_path: Path = INDEX) -> tuple[str, dict]:
    "README.md's text and the image files it links ({path relative to the root: bytes}) for the notebook."
    cells = json.loads(nb_path.read_text(encoding="utf-8"))["cells"]
    parts, images = [], {}
    for c in cells:
        src = _text(c.get("source"))
        if c["cell_type"] == "markdown":
            parts.append(_rebase_links(src.strip()))
            continue
        if c["cell_type"] != "code": continue
        d = directives(src)
        if "hide" in d: continue
        if d.get("echo", "").lower() != "false" and _code(src): parts.append(_block(_code(src), "python"))
        if d.get("output", "").lower() != "false":
            parts += _outputs(c, d.get("label") or None, images, d.get("fig-alt") or d.get("fig-cap"))
    return HEADER + "\n\n".join(p for p in parts if p) + "\n", images


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="write nothing; fail when README.md (or an image it links) differs")
    a = p.parse_args(argv)
    text, images = produce()
    if a.check:
        stale = [str(README.relative_to(ROOT))] if not README.is_file() or README.read_text(encoding="utf-8") != text else []
        stale += [k for k, v in images.items() if not (ROOT / k).is_file() or (ROOT / k).read_bytes() != v]
        if stale:
            print(f"FAIL: {', '.join(stale)} not what nbs/index.ipynb produces; run 'make export' (or "
                  "'python tools/make_readme.py') and commit.", file=sys.stderr)
            raise SystemExit(1)
        print("readme: README.md is what nbs/index.ipynb produces")
        return
    for k, v in images.items():
        if not (ROOT / k).is_file() or (ROOT / k).read_bytes() != v: (ROOT / k).write_bytes(v)
    for old in DOCS.glob("index-*.png"):   # content-named images no output shows any more
        if f"docs/{old.name}" not in images: old.unlink()
    if not README.is_file() or README.read_text(encoding="utf-8") != text: README.write_text(text, encoding="utf-8")
    print(f"wrote README.md from nbs/index.ipynb ({len(text.splitlines())} lines, {len(images)} image(s))")


if __name__ == "__main__":
    main()
