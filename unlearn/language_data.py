"""The language setting's corpora: English (kept) and Korean (forgotten) help pages that Debian packages ship.

    python -m unlearn.language_data --out runs/language/data      # what `launch/undo.py --setting language` runs

Source: LibreOffice 7.4's help in Korean and in US English (`libreoffice-help-ko`, `libreoffice-help-en-us`;
MPL-2.0, some pages Apache-2.0), fetched once with `apt-get download` into OUT/debs (or taken from
--debs DIR, for a machine without apt) and read as archives: nothing is installed or run from them.
Each help page is one document: the text of its paragraphs, headings, list items and table cells, the
navigation and debug lines dropped; a Korean page keeps only its paragraphs that are mostly Hangul (the
translation is incomplete: untranslated English strings stay out of the forget corpus). Pages shorter
than --min-chars after cleaning are left out.

Splits, by page, from a permutation seeded by --seed: English train / eval (90 / 10 %), Korean train /
eval / attack (80 / 10 / 10 %): the relearning attack fine-tunes on Korean pages that neither training
nor evaluation saw. Writes OUT/{english,korean}-{split}.jsonl ({"text": ...} per line), OUT/mix-train.jsonl
(both training splits interleaved: the base model's and the distillation corpus) and OUT/sources.json
(the packages, their sha256, the licence, documents and characters per file). A finished OUT (sources.json
present, every file as it records) is reused.
"""

from __future__ import annotations

import argparse
import hashlib
import html.parser
import io
import json
import random
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

from distill.errors import UserError

PACKAGES = {"english": ("libreoffice-help-en-us", "en-US"), "korean": ("libreoffice-help-ko", "ko")}
LICENCE = "MPL-2.0 (some pages Apache-2.0), per the packages' debian/copyright"
SPLITS = {"english": (("train", 0.9), ("eval", 0.1)), "korean": (("train", 0.8), ("eval", 0.1), ("attack", 0.1))}
HANGUL = re.compile("[\uac00-\ud7a3]")
BOILERPLATE = re.compile(r"^(Help content debug info|This page is:|Title is:|LibreOffice \S+ Help|Module|Contents|"
                         r"Index|Related Topics|관련 주제)")


class _Paragraphs(html.parser.HTMLParser):
    """The text of each block element of an HTML page (scripts, styles and the head left out)."""

    BLOCKS = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "li", "td", "pre", "div"}
    HIDDEN = {"script", "style", "head"}

    def __init__(self):
        super().__init__()
        self.paragraphs: list[str] = []
        self._text: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag, attrs):
        self._hidden += tag in self.HIDDEN
        if tag in self.BLOCKS:
            self._flush()

    def handle_endtag(self, tag):
        self._hidden -= tag in self.HIDDEN and self._hidden > 0
        if tag in self.BLOCKS:
            self._flush()

    def handle_data(self, data):
        if not self._hidden:
            self._text.append(data)

    def _flush(self):
        text = re.sub(r"\s+", " ", "".join(self._text)).strip()
        self._text = []
        if text:
            self.paragraphs.append(text)


def page_text(page: str, korean: bool) -> str:
    """A help page's document: its paragraphs, one per line, navigation and debug lines left out; for
    Korean only paragraphs at least half Hangul (spaces not counted)."""
    parser = _Paragraphs()
    parser.feed(page)
    parser.close()
    parser._flush()
    kept = []
    for p in parser.paragraphs:
        if BOILERPLATE.match(p) or len(p) < 3 or "🔎" in p:
            continue
        if korean and len(HANGUL.findall(p)) < 0.5 * len(p.replace(" ", "")):
            continue
        kept.append(p)
    return "\n".join(dict.fromkeys(kept))  # a repeated line (a page title echoed) once


def deb_members(deb: Path):
    """(name, bytes) of every file in a .deb's data archive, read with the standard library (ar + tar)."""
    raw = deb.read_bytes()
    if raw[:8] != b"!<arch>\n":
        raise UserError(f"{deb}: not a Debian package (no ar header)")
    pos = 8
    while pos + 60 <= len(raw):
        name, size = raw[pos:pos + 16].decode().strip().rstrip("/"), int(raw[pos + 48:pos + 58].decode().strip())
        body = raw[pos + 60:pos + 60 + size]
        pos += 60 + size + (size & 1)
        if name.startswith("data.tar"):
            with tarfile.open(fileobj=io.BytesIO(body)) as tar:
                for member in tar:
                    if member.isfile():
                        yield member.name, tar.extractfile(member).read()
            return
    raise UserError(f"{deb}: no data.tar member (truncated or not a Debian package)")


def fetch(debs: Path) -> dict[str, Path]:
    """The two packages' .deb files in `debs`, downloaded with apt-get when missing."""
    debs.mkdir(parents=True, exist_ok=True)
    found = {}
    for lang, (package, _) in PACKAGES.items():
        have = sorted(debs.glob(f"{package}_*.deb"))
        if not have:
            if shutil.which("apt-get") is None:
                raise UserError(f"{package}: not in {debs} and no apt-get here to download it; put its .deb there "
                                "(e.g. from packages.debian.org) and run again")
            done = subprocess.run(["apt-get", "download", package], cwd=debs, capture_output=True, text=True)
            have = sorted(debs.glob(f"{package}_*.deb"))
            if not have:
                raise UserError(f"apt-get download {package} failed: {done.stderr.strip()[-300:]}")
        found[lang] = have[-1]
    return found


def documents(deb: Path, lang: str, min_chars: int) -> dict[str, str]:
    """{page path: document} of one package's help pages, those of at least min_chars characters."""
    root = f"./usr/share/libreoffice/help/{PACKAGES[lang][1]}/text/"
    docs = {}
    for name, data in deb_members(deb):
        if name.startswith(root) and name.endswith(".html"):
            text = page_text(data.decode("utf-8", errors="replace"), korean=lang == "korean")
            if len(text) >= min_chars:
                docs[name[len(root):]] = text
    if not docs:
        raise UserError(f"{deb}: no {lang} help page of >= {min_chars} characters (an empty or different package)")
    return docs


def split(docs: dict[str, str], parts, seed: int) -> dict[str, list[str]]:
    """Pages shuffled by a seeded permutation of their sorted names, cut by the parts' fractions."""
    names = sorted(docs)
    random.Random(seed).shuffle(names)
    out, start = {}, 0
    for i, (part, share) in enumerate(parts):
        end = len(names) if i == len(parts) - 1 else start + round(share * len(names))
        out[part] = [docs[n] for n in names[start:end]]
        start = end
    return out


def _write(path: Path, texts: list[str]) -> dict:
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    return {"documents": len(texts), "characters": sum(map(len, texts)),
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def finished(out: Path) -> dict | None:
    """sources.json of a finished OUT whose every file is as it records, else None."""
    path = out / "sources.json"
    if not path.is_file():
        return None
    sources = json.loads(path.read_text())
    for name, info in sources["files"].items():
        f = out / name
        if not f.is_file() or hashlib.sha256(f.read_bytes()).hexdigest() != info["sha256"]:
            return None
    return sources


def prepare(out: Path, debs: Path | None = None, min_chars: int = 200, seed: int = 0) -> dict:
    """Fetch, clean and split the corpora into `out` (reused when finished); returns sources.json."""
    out = Path(out)
    done = finished(out)
    if done is not None:
        return done
    packages = fetch(Path(debs) if debs else out / "debs")
    out.mkdir(parents=True, exist_ok=True)
    files, parts = {}, {}
    for lang, deb in packages.items():
        parts[lang] = split(documents(deb, lang, min_chars), SPLITS[lang], seed)
        for part, texts in parts[lang].items():
            files[f"{lang}-{part}.jsonl"] = _write(out / f"{lang}-{part}.jsonl", texts)
    en, ko = parts["english"]["train"], parts["korean"]["train"]
    mix = [t for pair in zip(en, ko) for t in pair] + en[len(ko):] + ko[len(en):]
    files["mix-train.jsonl"] = _write(out / "mix-train.jsonl", mix)
    sources = {"packages": {lang: {"file": deb.name, "sha256": hashlib.sha256(deb.read_bytes()).hexdigest()}
                            for lang, deb in packages.items()},
               "licence": LICENCE, "min_chars": min_chars, "seed": seed, "files": files}
    (out / "sources.json").write_text(json.dumps(sources, indent=2, ensure_ascii=False) + "\n")
    return sources


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--debs", default=None, help="directory holding the two .deb files (default: OUT/debs, "
                                                "downloaded with apt-get when missing)")
    p.add_argument("--min-chars", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    sources = prepare(Path(args.out), args.debs, args.min_chars, args.seed)
    for name, info in sources["files"].items():
        print(f"{name:24s} {info['documents']:6d} documents {info['characters']:10,d} characters")


if __name__ == "__main__":
    main()
