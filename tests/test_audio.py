import numpy as np
import pytest
import soundfile as sf

from twist.audio import BadAudioError, find_audio, load_audio, prepare_waveform, save_audio


def test_stereo_44k_becomes_mono_16k(tmp_path):
    t = np.arange(44100) / 44100
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)], axis=1) * 0.5
    sf.write(tmp_path / "s.flac", stereo, 44100)
    wav = load_audio(tmp_path / "s.flac", 16000)
    assert wav.ndim == 1 and abs(len(wav) - 16000) <= 1 and wav.dtype == np.float32
    spec = np.abs(np.fft.rfft(wav))
    assert abs(np.argmax(spec) * 16000 / len(wav) - 440) < 3


@pytest.mark.parametrize(
    "make,reason",
    [
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_bytes(b"RIFF this is not audio at all" * 10), "unreadable"),
        (lambda p: sf.write(p, np.zeros(800, dtype=np.float32), 16000), "too short"),
    ],
)
def test_bad_files_named(tmp_path, make, reason):
    p = tmp_path / "bad.wav"
    make(p)
    with pytest.raises(BadAudioError) as e:
        load_audio(p, 16000, min_seconds=0.1)
    assert "bad.wav" in str(e.value) and reason in str(e.value)


def test_nan_rejected():
    with pytest.raises(BadAudioError, match="NaN"):
        prepare_waveform(np.array([0.0, np.nan, 0.1]), 16000, name="x.wav")


def test_save_and_find(tmp_path):
    save_audio(tmp_path / "a" / "x.wav", np.zeros(1600), 16000)
    (tmp_path / "a" / "notes.txt").write_text("no")
    sf.write(tmp_path / "B.FLAC", np.zeros(1600), 16000)
    found = find_audio(tmp_path)
    assert [p.name for p in found] == ["B.FLAC", "x.wav"]
    assert not list(tmp_path.glob("**/*.tmp"))


@pytest.mark.parametrize(
    "name,fmt,subtype", [("a.wav", "WAV", "PCM_16"), ("a.flac", "FLAC", "PCM_16"), ("a.ogg", "OGG", "VORBIS"), ("a.mp3", "MP3", "MPEG_LAYER_III")]
)
def test_every_libsndfile_format_reads_at_the_encoder_rate(tmp_path, name, fmt, subtype):
    t = np.arange(22050) / 22050
    sf.write(tmp_path / name, (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), 22050, format=fmt, subtype=subtype)
    wav = load_audio(tmp_path / name, 16000)
    assert abs(len(wav) - 16000) <= 160  # lossy codecs may pad a frame
    spec = np.abs(np.fft.rfft(wav[:16000]))
    assert abs(np.argmax(spec) * 16000 / 16000 - 300) < 3
