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


def _truncated_wav(path, seconds=1.0, keep=0.5):
    """A 16 kHz wav cut after ``keep`` of its bytes: its header still promises every frame."""
    sf.write(path, (0.1 * np.random.default_rng(0).standard_normal(int(16000 * seconds))).astype(np.float32), 16000,
             subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def test_a_truncated_wav_is_rejected_by_every_reader_with_the_reason(tmp_path):
    from twist.audio import audio_info, read_audio

    p = _truncated_wav(tmp_path / "cut.wav")
    # libsndfile itself reads the cut file as a shorter one, without a word
    assert sf.info(str(p)).frames < 16000 and len(sf.read(str(p))[0]) == sf.info(str(p)).frames
    for read in (lambda: load_audio(p, 16000), lambda: audio_info(p), lambda: read_audio(p)):
        with pytest.raises(BadAudioError) as e:
            read()
        msg = str(e.value)
        assert "\n" not in msg and str(p) in msg and "truncated" in msg and "16000 frames" in msg, msg


def test_a_wav_written_to_a_pipe_with_no_length_in_its_header_is_still_read(tmp_path):
    p = tmp_path / "stream.wav"
    sf.write(p, np.zeros(1600, dtype=np.float32), 16000, subtype="PCM_16")
    data = bytearray(p.read_bytes())
    data[4:8] = data[40:44] = b"\xff\xff\xff\xff"  # what a writer that cannot seek back leaves
    p.write_bytes(bytes(data))
    assert len(load_audio(p, 16000)) == 1600


def test_a_truncated_flac_is_rejected_with_the_reason(tmp_path):
    p = tmp_path / "cut.flac"
    sf.write(p, (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32), 16000)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(BadAudioError, match="cut.flac"):
        load_audio(p, 16000)


def test_no_module_reads_audio_around_the_checks_in_twist_audio():
    """Every reader goes through twist.audio, where truncated and non-regular files are refused."""
    import ast
    from pathlib import Path

    import twist

    root = Path(twist.__file__).parent
    offenders = []
    for f in sorted(root.rglob("*.py")):
        if f.name == "audio.py" and f.parent == root:
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("read", "info", "SoundFile")
                    and isinstance(node.func.value, ast.Name) and node.func.value.id in ("sf", "soundfile")):
                offenders.append(f"{f.relative_to(root)}:{node.lineno}")
    assert not offenders, offenders
