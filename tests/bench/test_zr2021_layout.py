"""twist-bench writes gold.csv exactly as the released ZeroSpeech 2021 files are laid out.

The official scorer (``zerospeech2021`` / ``zerospeech-benchmarks``) reads some gold.csv
columns by position and casts ``frequency`` to an integer, so the column order and a
numeric frequency are part of the format, not a detail. The official package cannot be
installed beside twist (it pins pydantic < 2, which wandb's extra rules out, and the
zerospeech2021 distribution is not on PyPI), so these tests hold twist to the released
layouts themselves.
"""

import json

import numpy as np

from twist.bench import blimp as B
from twist.bench import wuggy as W
from twist.bench.tts import TTSBackend

RELEASED_LEXICAL = "id,filename,voice,frequency,word,phones,length,correct"
RELEASED_SYNTACTIC = "id,filename,voice,type,subtype,correct,transcription"


class Beep(TTSBackend):
    name = "beep"

    def synthesize(self, text, voice=None):
        return np.full(1600, 0.1, np.float32)

    def synthesize_phonemes(self, phonemes, voice=None):
        return np.full(1600, 0.1, np.float32)


def _lexicon():
    return W.Lexicon.from_entries({w: [p.split()] for w, p in {
        "cat": "K AE1 T", "bad": "B AE1 D", "cadet": "K AE1 D AH0 T", "dog": "D AO1 G", "bag": "B AE1 G",
        "dot": "D AA1 T"}.items()})


def test_gold_csv_columns_are_the_released_zr2021_layouts_and_frequency_is_an_integer(tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("cat\ndog\n")  # no counts: the frequency the official scorer needs is still written
    W.build_wuggy(words, tmp_path, Beep(["v"]), lexicon=_lexicon(), min_ngram_count=1, dev_fraction=0.5,
                  progress=False, workers=1)
    pairs = tmp_path / "blimp.jsonl"
    pairs.write_text("".join(json.dumps({"sentence_good": g, "sentence_bad": b, "UID": "agr", "field": "m",
                                         "linguistics_term": "agreement"}) + "\n"
                             for g, b in [("The dog runs.", "The dog run."), ("The cats run.", "The cats runs.")]))
    B.build_blimp(pairs, tmp_path, Beep(["v"]), dev_fraction=0.5, progress=False, workers=1)

    freq = []
    for task, header in (("lexical", RELEASED_LEXICAL), ("syntactic", RELEASED_SYNTACTIC)):
        for split in ("dev", "test"):
            lines = (tmp_path / task / split / "gold.csv").read_text().splitlines()
            assert lines[0] == header, (task, split)
            if task == "lexical":
                freq += [line.split(",")[3] for line in lines[1:]]
    assert freq and all(f == "0" for f in freq)  # unknown counts: 0, ZR2021's "oov" band
