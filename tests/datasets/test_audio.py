"""Decoding, channel mapping, resampling and length fitting (audiointerp.datasets.audio)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiointerp.datasets.audio import SilentAudioWarning, check_audio_file, fit_length, load_audio
from audiointerp.errors import AudioFileError


def _write(path: Path, data: np.ndarray, sr: int) -> Path:
    sf.write(str(path), data.astype(np.float32), sr, subtype="FLOAT")
    return path


def _sine(freq: float, sr: int, n: int) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(n) / sr)).astype(np.float32)


def test_same_rate_returns_exact_samples(tmp_path: Path) -> None:
    data = _sine(440, 8000, 500)
    x = load_audio(_write(tmp_path / "a.wav", data, 8000), sample_rate=8000)
    assert x.dtype == torch.float32 and x.shape == (1, 500)
    np.testing.assert_array_equal(x[0].numpy(), data)


@pytest.mark.parametrize(
    ("sr_in", "n_in", "sr_out", "n_out"),
    [(44100, 44100, 16000, 16000), (8000, 800, 16000, 1600), (32000, 3200, 48000, 4800)],
)
def test_resampling_changes_length(tmp_path: Path, sr_in: int, n_in: int, sr_out: int, n_out: int) -> None:
    x = load_audio(_write(tmp_path / "a.wav", _sine(440, sr_in, n_in), sr_in), sample_rate=sr_out)
    assert x.shape == (1, n_out)


def test_resampling_keeps_the_pitch(tmp_path: Path) -> None:
    x = load_audio(_write(tmp_path / "a.wav", _sine(440, 44100, 44100), 44100), sample_rate=16000)[0].numpy()
    spectrum = np.abs(np.fft.rfft(x))
    peak_hz = np.argmax(spectrum) * 16000 / len(x)
    assert abs(peak_hz - 440) <= 1.0


def test_stereo_is_averaged_to_mono_and_kept_as_stereo(tmp_path: Path) -> None:
    left, right = np.full(300, 0.5, np.float32), np.full(300, -0.1, np.float32)
    path = _write(tmp_path / "st.wav", np.stack([left, right], axis=1), 8000)
    mono = load_audio(path, 8000, channels=1)
    assert mono.shape == (1, 300)
    np.testing.assert_allclose(mono.numpy(), 0.2, atol=1e-6)
    stereo = load_audio(path, 8000, channels=2)
    assert stereo.shape == (2, 300)
    np.testing.assert_allclose(stereo[0].numpy(), 0.5)
    np.testing.assert_allclose(stereo[1].numpy(), -0.1, atol=1e-7)


def test_mono_is_duplicated_to_stereo(tmp_path: Path) -> None:
    data = _sine(300, 8000, 400)
    x = load_audio(_write(tmp_path / "m.wav", data, 8000), 16000, channels=2)
    assert x.shape == (2, 800)
    assert torch.equal(x[0], x[1])


def test_more_than_two_channels_keep_the_first_two_for_stereo(tmp_path: Path) -> None:
    data = np.stack([np.full(200, v, np.float32) for v in (0.1, 0.2, 0.6)], axis=1)
    path = _write(tmp_path / "c3.wav", data, 8000)
    np.testing.assert_allclose(load_audio(path, 8000, channels=2)[:, 0].numpy(), [0.1, 0.2], atol=1e-7)
    np.testing.assert_allclose(load_audio(path, 8000, channels=1)[0, 0].item(), 0.3, atol=1e-6)


def test_missing_file_names_path_and_cause(tmp_path: Path) -> None:
    path = tmp_path / "nope.wav"
    with pytest.raises(AudioFileError, match="nope.wav.*not found") as info:
        load_audio(path, 16000)
    assert info.value.path == str(path)


def test_corrupt_file_raises_audio_file_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.wav"
    path.write_bytes(b"this is not a wav file at all" * 20)
    with pytest.raises(AudioFileError, match="garbage.wav.*cannot decode"):
        load_audio(path, 16000)
    with pytest.raises(AudioFileError, match="garbage.wav.*unreadable audio header"):
        check_audio_file(path)


def test_empty_files_raise(tmp_path: Path) -> None:
    zero_bytes = tmp_path / "zero.wav"
    zero_bytes.touch()
    with pytest.raises(AudioFileError, match="zero.wav.*empty"):
        load_audio(zero_bytes, 16000)
    no_frames = _write(tmp_path / "noframes.wav", np.zeros(0, np.float32), 8000)
    with pytest.raises(AudioFileError, match="noframes.wav.*no audio frames"):
        load_audio(no_frames, 16000)
    with pytest.raises(AudioFileError, match="no audio frames"):
        check_audio_file(no_frames)


def test_check_audio_file_returns_frames(tmp_path: Path) -> None:
    assert check_audio_file(_write(tmp_path / "a.wav", _sine(100, 8000, 321), 8000)) == 321


def test_silent_file_warns_naming_it(tmp_path: Path) -> None:
    path = _write(tmp_path / "quiet.wav", np.zeros(256, np.float32), 8000)
    with pytest.warns(SilentAudioWarning, match="quiet.wav"):
        x = load_audio(path, 8000)
    assert x.shape == (1, 256) and not x.any()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_audio(_write(tmp_path / "loud.wav", _sine(100, 8000, 256), 8000), 8000)


@pytest.mark.parametrize(("sr", "ch"), [(0, 1), (-16000, 1), (16000.5, 1), (True, 1), (16000, 0), (16000, 3)])
def test_bad_parameters_raise_value_error(tmp_path: Path, sr: object, ch: object) -> None:
    path = _write(tmp_path / "a.wav", _sine(100, 8000, 100), 8000)
    with pytest.raises(ValueError):
        load_audio(path, sr, channels=ch)  # type: ignore[arg-type]


def test_fit_length_crops_and_pads() -> None:
    x = torch.arange(10, dtype=torch.float32).reshape(1, 10)
    assert fit_length(x, 4).tolist() == [[0, 1, 2, 3]]
    assert fit_length(x, 4, offset=6).tolist() == [[6, 7, 8, 9]]
    assert torch.equal(fit_length(x, 10), x)
    padded = fit_length(x, 13)
    assert padded.shape == (1, 13) and padded[0, :10].tolist() == list(range(10)) and not padded[0, 10:].any()
    stereo = torch.ones(2, 3)
    assert fit_length(stereo, 5).tolist() == [[1, 1, 1, 0, 0]] * 2
    with pytest.raises(ValueError, match="offset"):
        fit_length(x, 4, offset=7)
    with pytest.raises(ValueError, match="offset"):
        fit_length(x, 4, offset=-1)
    with pytest.raises(ValueError, match="n_samples"):
        fit_length(x, 0)


def _truncate_wav(path: Path, keep_frames: int, extra_bytes: int = 0) -> Path:
    """Cut ``path`` (a WAV) inside its data chunk after ``keep_frames`` whole frames and ``extra_bytes`` more."""
    raw = path.read_bytes()
    data_at = raw.index(b"data") + 8
    block_align = int.from_bytes(raw[raw.index(b"fmt ") + 20 : raw.index(b"fmt ") + 22], "little")
    path.write_bytes(raw[: data_at + keep_frames * block_align + extra_bytes])
    return path


@pytest.mark.parametrize(("subtype", "channels"), [("FLOAT", 1), ("PCM_16", 2), ("PCM_24", 1)])
def test_truncated_wav_names_the_file_and_both_lengths(tmp_path: Path, subtype: str, channels: int) -> None:
    data = np.random.default_rng(0).uniform(-0.5, 0.5, size=(1000, channels)).astype(np.float32)
    path = tmp_path / "cut.wav"
    sf.write(str(path), data, 8000, subtype=subtype)
    _truncate_wav(path, 489, extra_bytes=1)
    with pytest.raises(AudioFileError, match=r"cut\.wav.*truncated.*1000 frames.*489") as info:
        check_audio_file(path)
    assert info.value.path == str(path)
    with pytest.raises(AudioFileError, match=r"cut\.wav.*truncated.*1000 frames.*489"):
        load_audio(path, 8000)


def test_complete_wav_with_trailing_chunks_and_formats_without_a_count_are_accepted(tmp_path: Path) -> None:
    wav = _write(tmp_path / "a.wav", _sine(100, 8000, 700), 8000)
    raw = wav.read_bytes()  # a chunk after the data chunk (e.g. LIST) does not make the file look truncated
    extra = b"LIST" + (6).to_bytes(4, "little") + b"INFOxx"
    riff_size = int.from_bytes(raw[4:8], "little") + len(extra)
    wav.write_bytes(raw[:4] + riff_size.to_bytes(4, "little") + raw[8:] + extra)
    assert check_audio_file(wav) == 700 and load_audio(wav, 8000).shape == (1, 700)
    flac = tmp_path / "a.flac"
    sf.write(str(flac), _sine(100, 8000, 700), 8000, subtype="PCM_16")
    assert check_audio_file(flac) == 700 and load_audio(flac, 8000).shape == (1, 700)


def test_streamed_wav_with_an_unknown_data_size_is_accepted(tmp_path: Path) -> None:
    """A writer that could not seek back leaves the data size at 0xFFFFFFFF: there is no count to check."""
    wav = _write(tmp_path / "s.wav", _sine(100, 8000, 300), 8000)
    raw = bytearray(wav.read_bytes())
    at = raw.index(b"data") + 4
    raw[at : at + 4] = b"\xff\xff\xff\xff"
    wav.write_bytes(bytes(raw))
    assert load_audio(wav, 8000).shape == (1, 300)
    assert check_audio_file(wav) == 300


@pytest.mark.parametrize("subtype", ["PCM_16", "FLOAT"])
def test_truncated_aiff_names_the_file_and_both_lengths(tmp_path: Path, subtype: str) -> None:
    """AIFF states its frame count in the COMM chunk; a file cut inside SSND is refused like a WAV."""
    path = tmp_path / "cut.aiff"
    sf.write(str(path), _sine(100, 8000, 1000), 8000, format="AIFF", subtype=subtype)
    raw = path.read_bytes()
    frame_bytes = 2 if subtype == "PCM_16" else 4
    path.write_bytes(raw[: raw.index(b"SSND") + 16 + 600 * frame_bytes + 1])
    with pytest.raises(AudioFileError, match=r"cut\.aiff.*truncated.*1000 frames.*only 600"):
        check_audio_file(path)
    with pytest.raises(AudioFileError, match=r"cut\.aiff.*truncated.*1000 frames.*only 600"):
        load_audio(path, 8000)
