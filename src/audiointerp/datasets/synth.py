"""The built-in synthetic impact-sound set: 6 materials x 4 actions, rendered by modal synthesis.

It stands in for the non-public MaAS recordings of the flow-disentangler seed (see DESIGN.md, "The built-in
impact-sound set" and "Seed 000"). Every clip is an *action* (an excitation signal) convolved with the
impulse response of an *object* made of one *material*:

* The object rings as a sum of damped sinusoids ``a * exp(-alpha t) * sin(2 pi f t + phi)``. The decay rate
  follows Wildes & Richards' internal-friction model, ``alpha = pi * f * tan_phi``, so the decay time at
  frequency ``f`` is ``T60 = ln(1000) / alpha ~= 6.9 / alpha``; ``tan_phi`` and the mode layout come from
  :data:`MATERIAL_ACOUSTICS`.
* The object's size is drawn per clip and scales all modal frequencies by ``1 / size``, so pitch is a
  nuisance factor; gain (peak level) and a little background noise vary within every class.
* Actions: tapping (1-3 short contact pulses), rubbing (sustained band-limited friction noise with a slow
  wobble), whirling (noise swept in level and centre frequency at 1-4 Hz, then a Doppler shift from the
  rotation), destructing (a decaying stream of impacts and crackles, part of them on a smaller fragment).

:func:`synthesize` writes ``audio/*.wav`` and ``manifest.csv`` (columns :data:`MANIFEST_COLUMNS`).
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import multiprocessing
import numbers
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import fft as sp_fft
from tqdm import tqdm

from audiointerp.errors import ConfigError

__all__ = [
    "ACTIONS",
    "CLASS_LABELS",
    "MANIFEST_COLUMNS",
    "MATERIALS",
    "MATERIAL_ACOUSTICS",
    "MaterialAcoustics",
    "N_FOLDS",
    "class_label",
    "describe",
    "render_clip",
    "synthesize",
]

MATERIALS = ("wood", "metal", "glass", "stone", "cardboard", "plastic")
ACTIONS = ("tapping", "rubbing", "whirling", "destructing")
CLASS_LABELS = tuple(f"{material}_{action}" for material in MATERIALS for action in ACTIONS)
MANIFEST_COLUMNS = ("path", "label", "description", "fold", "material", "action")
N_FOLDS = 5
MIN_SAMPLE_RATE = 8000
MIN_SECONDS = 0.05  # shorter clips cannot hold an impact and its ringing

SPEED_OF_SOUND = 343.0  # m/s, for the Doppler shift of whirling
HIGHEST_MODE_SHARE_OF_SAMPLE_RATE = 0.45  # modes at or above 0.45 * sample_rate are dropped (below Nyquist)
OBJECT_SIZE_RANGE = (0.7, 1.4)  # relative size, log-uniform; modal frequencies scale as 1 / size
PEAK_LEVEL_RANGE = (0.3, 0.9)  # final peak amplitude, uniform: loudness is not a class cue
BACKGROUND_NOISE_DB_RANGE = (-60.0, -40.0)  # background noise RMS relative to the loudest 20 ms frame
ANALYSIS_FRAME_SECONDS = 0.02


@dataclass(frozen=True)
class MaterialAcoustics:
    """How one material rings when struck (modal-synthesis parameters).

    Mode ``k = 1..n_modes`` of a unit-size object sits at
    ``f_k = f_1 * k * sqrt((1 + B k^2) / (1 + B)) * exp(jitter * N(0, 1))`` (stiff-bar stretching ``B``; the
    jitter stands for irregular shapes) with amplitude ``(f_k / f_1) ** (tilt / 6.02)`` times a random
    excitation weight, and decays at ``alpha_k = pi * f_k * loss_factor``.
    """

    loss_factor: float  # tan(phi), internal friction (Wildes & Richards)
    fundamental_hz: tuple[float, float]  # f_1 range of a unit-size object, drawn log-uniform
    n_modes: int  # modes per object, before dropping those near Nyquist
    inharmonicity: float  # B above; 0 gives a harmonic series
    frequency_jitter: float  # std of the per-mode log-frequency scatter
    tilt_db_per_octave: float  # mode amplitude slope above f_1 (negative = duller)
    contact_ms: tuple[float, float]  # duration of one impact pulse: short for stiff materials
    noise_share: float = 0.0  # share (by RMS) of the response that is damped low-passed noise
    noise_cutoff_hz: tuple[float, float] = (1000.0, 1000.0)  # corner frequency of that noise, log-uniform

    def decay_time(self, frequency_hz: float) -> float:
        """T60 in seconds of a mode at ``frequency_hz``: ``ln(1000) / (pi f tan_phi)``."""
        return math.log(1000.0) / (math.pi * frequency_hz * self.loss_factor)


# Checked against DESIGN.md's table: decay_time(1000 Hz) gives metal 4.4 s, glass 1.1 s, stone 0.44 s,
# wood 0.22 s, plastic 0.11 s, cardboard 0.03 s ("~4 s, ~1 s, ~0.4 s, ~0.2 s, ~0.1 s, < 0.05 s").
MATERIAL_ACOUSTICS: dict[str, MaterialAcoustics] = {
    # sparse, strongly inharmonic, bright, long ringing
    "metal": MaterialAcoustics(
        loss_factor=5e-4, fundamental_hz=(300.0, 900.0), n_modes=8, inharmonicity=0.1,
        frequency_jitter=0.02, tilt_db_per_octave=0.0, contact_ms=(0.1, 0.4),
    ),
    # high modes, mildly inharmonic, bright
    "glass": MaterialAcoustics(
        loss_factor=2e-3, fundamental_hz=(450.0, 1300.0), n_modes=10, inharmonicity=0.03,
        frequency_jitter=0.03, tilt_db_per_octave=-1.0, contact_ms=(0.1, 0.4),
    ),
    "stone": MaterialAcoustics(
        loss_factor=5e-3, fundamental_hz=(300.0, 800.0), n_modes=16, inharmonicity=0.02,
        frequency_jitter=0.05, tilt_db_per_octave=-3.0, contact_ms=(0.2, 0.6),
        noise_share=0.1, noise_cutoff_hz=(2000.0, 5000.0),
    ),
    # low and dense, nearly harmonic, a little contact noise
    "wood": MaterialAcoustics(
        loss_factor=1e-2, fundamental_hz=(200.0, 500.0), n_modes=30, inharmonicity=0.005,
        frequency_jitter=0.08, tilt_db_per_octave=-3.0, contact_ms=(0.4, 1.2),
        noise_share=0.15, noise_cutoff_hz=(1000.0, 3000.0),
    ),
    "plastic": MaterialAcoustics(
        loss_factor=2e-2, fundamental_hz=(250.0, 700.0), n_modes=20, inharmonicity=0.01,
        frequency_jitter=0.06, tilt_db_per_octave=-3.0, contact_ms=(0.4, 1.2),
        noise_share=0.15, noise_cutoff_hz=(1500.0, 4000.0),
    ),
    # noise-like and dull: many dense, irregular, heavily damped modes plus low-passed noise
    "cardboard": MaterialAcoustics(
        loss_factor=8e-2, fundamental_hz=(120.0, 300.0), n_modes=100, inharmonicity=0.0,
        frequency_jitter=0.3, tilt_db_per_octave=-6.0, contact_ms=(1.5, 4.0),
        noise_share=0.4, noise_cutoff_hz=(500.0, 1500.0),
    ),
}


# ----------------------------------------------------------------------------------------------------------
# argument checks


def _check_factors(material: str, action: str) -> None:
    if material not in MATERIAL_ACOUSTICS:
        raise ConfigError(f"unknown material {material!r}; expected one of {', '.join(MATERIALS)}")
    if action not in ACTIONS:
        raise ConfigError(f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}")


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_timing(sample_rate: int, seconds: float) -> int:
    """Validate the sample rate and duration; return the clip length in samples."""
    if not _is_int(sample_rate) or sample_rate < MIN_SAMPLE_RATE:
        raise ConfigError(f"sample_rate must be an integer >= {MIN_SAMPLE_RATE} Hz, got {sample_rate!r}")
    if isinstance(seconds, bool) or not isinstance(seconds, numbers.Real) or not math.isfinite(seconds):
        raise ConfigError(f"seconds must be a finite number, got {seconds!r}")
    if seconds <= 0:
        raise ConfigError(f"seconds must be > 0, got {seconds!r}")
    if seconds < MIN_SECONDS:
        raise ConfigError(f"seconds must be at least {MIN_SECONDS} s to hold an impact, got {seconds!r}")
    return int(round(float(seconds) * int(sample_rate)))


def class_label(material: str, action: str) -> str:
    """The class label ``<material>_<action>``."""
    _check_factors(material, action)
    return f"{material}_{action}"


# ----------------------------------------------------------------------------------------------------------
# signal building blocks


def _log_uniform(rng: np.random.Generator, low: float, high: float, size: int | None = None) -> np.ndarray:
    return np.exp(rng.uniform(math.log(low), math.log(high), size))


def _sum_of_damped_sinusoids(
    frequencies: np.ndarray,
    decay_rates: np.ndarray,
    amplitudes: np.ndarray,
    phases: np.ndarray,
    n_samples: int,
    sample_rate: int,
    block: int = 128,
) -> np.ndarray:
    """``sum_k a_k exp(-alpha_k t) sin(2 pi f_k t + phi_k)`` for ``t = 0 .. n_samples-1`` samples.

    Exact up to rounding, without evaluating ``exp``/``sin`` on the full [modes, T] grid: with the per-sample
    pole ``z_k = exp((-alpha_k + 2 pi i f_k) / sample_rate)``, sample ``t = m * block + j`` of mode ``k`` is
    ``Im(a_k e^{i phi_k} z_k^{m block} z_k^j)``. The powers come from running products over ``j < block``
    and over ``m``; the sum over modes is one real matrix product giving ``Im(W @ Z)`` for
    ``W = [blocks, modes]`` (weighted block starts) and ``Z = [modes, block]`` (powers within a block).
    """
    poles = np.exp((-np.asarray(decay_rates, float) + 2j * np.pi * np.asarray(frequencies, float)) / sample_rate)
    n_blocks = -(-n_samples // block)
    within_block = np.cumprod(np.repeat(poles[:, None], block, axis=1), axis=1) / poles[:, None]  # z^j
    block_step = within_block[:, -1] * poles  # z^block
    block_starts = np.cumprod(np.repeat(block_step[None, :], n_blocks, axis=0), axis=0) / block_step  # z^(m block)
    weights = np.asarray(amplitudes, float) * np.exp(1j * np.asarray(phases, float))
    starts = block_starts * weights
    imaginary_part = np.concatenate([starts.real, starts.imag], axis=1) @ np.concatenate(
        [within_block.imag, within_block.real], axis=0)
    return imaginary_part.reshape(-1)[:n_samples]


def _uniform_complex(rng: np.random.Generator, size: int) -> np.ndarray:
    """Zero-mean complex values with independent uniform real and imaginary parts."""
    return (rng.random(2 * size) - 0.5).view(np.complex128)


def _shaped_noise(rng: np.random.Generator, n_samples: int, gain_of_frequency: Callable[[np.ndarray], np.ndarray],
                  sample_rate: int) -> np.ndarray:
    """Noise with amplitude spectrum ``gain_of_frequency(f_hz)``, drawn in the FFT domain; unit RMS.

    Every output sample sums thousands of independent random spectral terms, so it is Gaussian;
    uniform draws (several times cheaper than normal ones) do as well as normal ones for the terms.
    """
    frequencies = sp_fft.rfftfreq(n_samples, 1.0 / sample_rate)
    spectrum = _uniform_complex(rng, frequencies.size)
    noise = sp_fft.irfft(spectrum * gain_of_frequency(frequencies), n_samples)
    return noise / max(float(np.sqrt(np.mean(noise**2))), 1e-12)


def _lowpass_gain(cutoff_hz: float, order: int = 2) -> Callable[[np.ndarray], np.ndarray]:
    return lambda f: 1.0 / np.sqrt(1.0 + (f / cutoff_hz) ** (2 * order))


def _log_gaussian_band_gain(centre_hz: float, width_octaves: float) -> Callable[[np.ndarray], np.ndarray]:
    def gain(f: np.ndarray) -> np.ndarray:
        octaves = np.log2(np.maximum(f, 1.0) / centre_hz)
        return np.exp(-0.5 * (octaves / width_octaves) ** 2)

    return gain


def _convolve(*pairs: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """``sum(excitation * response)`` over ``(excitation, response)`` pairs of equal-length signals (``*`` is
    linear convolution), cut to that length; one FFT-domain product per pair and a single inverse FFT."""
    n_samples = len(pairs[0][0])
    n_fft = sp_fft.next_fast_len(2 * n_samples - 1, real=True)
    spectrum = sum(sp_fft.rfft(excitation, n_fft) * sp_fft.rfft(response, n_fft) for excitation, response in pairs)
    return sp_fft.irfft(spectrum, n_fft)[:n_samples]


def _contact_pulse(duration_s: float, sample_rate: int) -> np.ndarray:
    """A half-sine force pulse of the given contact duration (at least one sample), unit area."""
    length = max(1, int(round(duration_s * sample_rate)))
    pulse = np.sin(np.pi * (np.arange(length) + 0.5) / length)
    return pulse / pulse.sum()


def _place_kernel(times_s: np.ndarray, levels: np.ndarray, kernel: np.ndarray, n_samples: int,
                  sample_rate: int) -> np.ndarray:
    """A signal with copies of the short ``kernel``, scaled by ``levels``, starting at each of ``times_s``."""
    signal = np.zeros(n_samples + len(kernel))
    starts = np.clip(np.round(np.asarray(times_s) * sample_rate).astype(int), 0, n_samples - 1)
    indices = starts[:, None] + np.arange(len(kernel))[None, :]
    np.add.at(signal, indices.reshape(-1), (np.asarray(levels, float)[:, None] * kernel[None, :]).reshape(-1))
    return signal[:n_samples]


def _cos(phase: np.ndarray) -> np.ndarray:
    """``cos(phase)`` in float32 after wrapping the phase to [0, 2 pi): NumPy's float32 cosine is vectorised
    and ~25x faster than its float64 one, and 1e-7 errors are far below 16-bit audio resolution."""
    return np.cos((phase - 2 * np.pi * np.floor(phase / (2 * np.pi))).astype(np.float32))


def _sin(phase: np.ndarray) -> np.ndarray:
    """``sin(phase)``, computed like :func:`_cos`."""
    return np.sin((phase - 2 * np.pi * np.floor(phase / (2 * np.pi))).astype(np.float32))


def _smooth_gate(t: np.ndarray, start: float, stop: float, ramp: float) -> np.ndarray:
    """1 between ``start`` and ``stop`` with raised-cosine ramps of ``ramp`` seconds, else 0."""
    rise = np.clip((t - start) / ramp, 0.0, 1.0)
    fall = np.clip((stop - t) / ramp, 0.0, 1.0)
    return (0.5 - 0.5 * _cos(np.pi * rise)) * (0.5 - 0.5 * _cos(np.pi * fall))


# ----------------------------------------------------------------------------------------------------------
# the object: material + size -> impulse response


def _object_response(acoustics: MaterialAcoustics, rng: np.random.Generator, sample_rate: int, n_samples: int,
                     frequency_scale: float) -> np.ndarray:
    """Impulse response (unit RMS) of one object: damped modes plus, for some materials, damped noise."""
    k = np.arange(1, acoustics.n_modes + 1, dtype=float)
    b = acoustics.inharmonicity
    fundamental = float(_log_uniform(rng, *acoustics.fundamental_hz)) * frequency_scale
    scatter = np.exp(acoustics.frequency_jitter * rng.standard_normal(k.size))
    ratios = k * np.sqrt((1.0 + b * k**2) / (1.0 + b)) * scatter
    ratios[0] = 1.0
    frequencies = fundamental * ratios
    amplitudes = (ratios ** (acoustics.tilt_db_per_octave / 6.02)) * rng.uniform(0.3, 1.0, k.size)
    phases = rng.uniform(0.0, 2.0 * np.pi, k.size)
    audible = frequencies < HIGHEST_MODE_SHARE_OF_SAMPLE_RATE * sample_rate
    audible[0] = True  # the fundamental always stays (fundamental ranges sit far below 0.45 * 8 kHz)
    frequencies, amplitudes, phases = frequencies[audible], amplitudes[audible], phases[audible]
    decay_rates = np.pi * frequencies * acoustics.loss_factor  # Wildes & Richards
    modes = _sum_of_damped_sinusoids(frequencies, decay_rates, amplitudes, phases, n_samples, sample_rate)
    response = modes / max(float(np.sqrt(np.mean(modes**2))), 1e-12)
    if acoustics.noise_share > 0.0:
        cutoff = float(_log_uniform(rng, *acoustics.noise_cutoff_hz)) * frequency_scale
        cutoff = min(cutoff, 0.4 * sample_rate)
        t = np.arange(n_samples) / sample_rate
        noise = _shaped_noise(rng, n_samples, _lowpass_gain(cutoff), sample_rate)
        noise *= np.exp(-np.pi * cutoff * acoustics.loss_factor * t)  # decays like a mode at the cutoff
        noise /= max(float(np.sqrt(np.mean(noise**2))), 1e-12)
        response = (1.0 - acoustics.noise_share) * response + acoustics.noise_share * noise
    return response


# ----------------------------------------------------------------------------------------------------------
# the actions: excitation convolved with the object's response


def _render_tapping(acoustics: MaterialAcoustics, size: float, rng: np.random.Generator, sample_rate: int,
                    n_samples: int) -> np.ndarray:
    """1-3 short contact pulses, the first near the start, later ones 80-300 ms apart and weaker."""
    duration = n_samples / sample_rate
    response = _object_response(acoustics, rng, sample_rate, n_samples, 1.0 / size)
    n_taps = int(rng.integers(1, 4))
    times = [rng.uniform(0.0, 0.1) * duration]
    for _ in range(n_taps - 1):
        next_time = times[-1] + rng.uniform(0.08, 0.3)
        if next_time > 0.8 * duration:
            break
        times.append(next_time)
    levels = np.concatenate([[1.0], rng.uniform(0.3, 1.0, len(times) - 1)])
    pulse = _contact_pulse(rng.uniform(*acoustics.contact_ms) * 1e-3, sample_rate)
    excitation = _place_kernel(np.asarray(times), levels, pulse, n_samples, sample_rate)
    return _convolve((excitation, response))


def _render_rubbing(acoustics: MaterialAcoustics, size: float, rng: np.random.Generator, sample_rate: int,
                    n_samples: int) -> np.ndarray:
    """Sustained band-limited friction noise with a slow (0.5-3 Hz) back-and-forth amplitude wobble."""
    duration = n_samples / sample_rate
    t = np.arange(n_samples) / sample_rate
    response = _object_response(acoustics, rng, sample_rate, n_samples, 1.0 / size)
    centre = min(float(_log_uniform(rng, 300.0, 3000.0)), 0.3 * sample_rate)
    friction = _shaped_noise(rng, n_samples, _log_gaussian_band_gain(centre, rng.uniform(0.7, 1.5)), sample_rate)
    start = rng.uniform(0.0, 0.1) * duration
    stop = rng.uniform(0.85, 1.0) * duration
    ramp = min(rng.uniform(0.03, 0.08), 0.2 * duration)
    wobble = 1.0 + rng.uniform(0.3, 0.8) * _sin(2 * np.pi * rng.uniform(0.5, 3.0) * t + rng.uniform(0, 2 * np.pi))
    excitation = friction * _smooth_gate(t, start, stop, ramp) * wobble
    return _convolve((excitation, response))


def _render_whirling(acoustics: MaterialAcoustics, size: float, rng: np.random.Generator, sample_rate: int,
                     n_samples: int) -> np.ndarray:
    """An object swung on a circle at 1-4 Hz: airflow noise swept in level and centre frequency with the
    rotation, convolved with the object, then heard from outside the circle (Doppler shift and distance)."""
    t = np.arange(n_samples) / sample_rate
    response = _object_response(acoustics, rng, sample_rate, n_samples, 1.0 / size)
    rotation_hz = rng.uniform(1.0, 4.0)
    angle = 2 * np.pi * rotation_hz * t + rng.uniform(0.0, 2 * np.pi)  # 0 = nearest the listener
    cos_angle, sin_angle = _cos(angle), _sin(angle)
    # Airflow noise: complex low-pass noise shifted up to a centre frequency that sweeps with the rotation
    # (higher while approaching), louder near the listener.
    base_centre = float(_log_uniform(rng, 500.0, 2500.0))
    centre = np.minimum(base_centre * np.exp2(-rng.uniform(0.3, 1.0) * sin_angle), 0.3 * sample_rate)
    half_bandwidth = min(rng.uniform(0.2, 0.4) * base_centre, 0.08 * sample_rate)  # stays below Nyquist
    frequencies = sp_fft.fftfreq(n_samples, 1.0 / sample_rate)
    baseband = sp_fft.ifft(_uniform_complex(rng, n_samples) * np.exp(-0.5 * (frequencies / half_bandwidth) ** 2))
    carrier_phase = 2 * np.pi * np.cumsum(centre) / sample_rate
    airflow = baseband.real * _cos(carrier_phase) - baseband.imag * _sin(carrier_phase)
    level = 0.25 + 0.75 * (0.5 + 0.5 * cos_angle) ** 1.5
    emitted = _convolve((airflow * level, response))
    # Propagation from the moving object: delay d(t)/c (the Doppler glide) and 1/d(t) spreading.
    radius = rng.uniform(0.4, 1.0)
    listener = rng.uniform(1.5, 3.0)
    distance = np.sqrt(listener**2 + radius**2 - 2 * listener * radius * cos_angle.astype(float))
    emission_time = t - (distance - listener) / SPEED_OF_SOUND
    received = np.interp(emission_time, t, emitted, left=0.0, right=0.0)
    return received * (listener - radius) / distance


def _render_destructing(acoustics: MaterialAcoustics, size: float, rng: np.random.Generator, sample_rate: int,
                        n_samples: int) -> np.ndarray:
    """A dense stream of impacts and crackles whose rate and level fall off exponentially; each event hits
    either the object or a smaller fragment of it (higher modes)."""
    duration = n_samples / sample_rate
    onset = rng.uniform(0.0, 0.05) * duration
    peak_rate = rng.uniform(80.0, 300.0)  # events per second at the onset
    rate_decay = rng.uniform(0.1, 0.35)  # s
    level_decay = rng.uniform(0.15, 0.5)  # s
    # Inhomogeneous Poisson process lambda(t) = peak_rate * exp(-(t - onset) / rate_decay), by inverting
    # the cumulative rate; the onset event is always there.
    window_share = 1.0 - math.exp(-(duration - onset) / rate_decay)
    n_events = int(rng.poisson(peak_rate * rate_decay * window_share))
    delays = -rate_decay * np.log1p(-rng.uniform(0.0, 1.0, n_events) * window_share)
    times = onset + np.concatenate([[0.0], np.sort(delays)])
    levels = np.exp(-(times - onset) / level_decay) * rng.lognormal(0.0, 0.5, times.size)
    levels[0] = max(levels[0], 1.0)
    is_crackle = rng.uniform(size=times.size) < rng.uniform(0.3, 0.6)
    on_fragment = rng.uniform(size=times.size) < 0.5
    on_fragment[0] = False

    pulse = _contact_pulse(rng.uniform(*acoustics.contact_ms) * 1e-3, sample_rate)
    crackle_tau = rng.uniform(0.5e-3, 3e-3)
    crackle_envelope = np.exp(-np.arange(int(6 * crackle_tau * sample_rate) + 1) / (crackle_tau * sample_rate))
    crackle_envelope /= crackle_envelope.sum()
    crackle_noise = rng.uniform(-1.0, 1.0, n_samples)

    object_response = _object_response(acoustics, rng, sample_rate, n_samples, 1.0 / size)
    fragment_response = _object_response(acoustics, rng, sample_rate, n_samples, rng.uniform(1.5, 3.0) / size)
    fragment_weight = rng.uniform(0.4, 1.0)

    def excitation(selected: np.ndarray) -> np.ndarray:
        impacts = _place_kernel(times[selected & ~is_crackle], levels[selected & ~is_crackle], pulse,
                                n_samples, sample_rate)
        crackles = _place_kernel(times[selected & is_crackle], levels[selected & is_crackle], crackle_envelope,
                                 n_samples, sample_rate)
        return impacts + crackle_noise * crackles

    return _convolve((excitation(~on_fragment), object_response),
                     (fragment_weight * excitation(on_fragment), fragment_response))


_ACTION_RENDERERS: dict[str, Callable[..., np.ndarray]] = {
    "tapping": _render_tapping,
    "rubbing": _render_rubbing,
    "whirling": _render_whirling,
    "destructing": _render_destructing,
}


def _frame_rms(signal: np.ndarray, sample_rate: int) -> np.ndarray:
    frame = max(1, int(round(ANALYSIS_FRAME_SECONDS * sample_rate)))
    n_frames = -(-len(signal) // frame)
    padded = np.zeros(n_frames * frame)
    padded[: len(signal)] = signal
    return np.sqrt(np.mean(padded.reshape(n_frames, frame) ** 2, axis=1))


def render_clip(material: str, action: str, rng: np.random.Generator, sample_rate: int = 16000,
                seconds: float = 1.0) -> np.ndarray:
    """Render one clip of ``material`` under ``action``: float32 mono, peak in [0.3, 0.9], never silent.

    All randomness (object size and modes, excitation, background noise, gain) comes from ``rng``.
    """
    _check_factors(material, action)
    n_samples = _check_timing(sample_rate, seconds)
    sample_rate = int(sample_rate)
    size = float(_log_uniform(rng, *OBJECT_SIZE_RANGE))
    dry = _ACTION_RENDERERS[action](MATERIAL_ACOUSTICS[material], size, rng, sample_rate, n_samples)
    loudest_frame = float(_frame_rms(dry, sample_rate).max())
    if not np.isfinite(loudest_frame) or loudest_frame <= 0.0:
        raise RuntimeError(f"rendering {material}_{action} produced a silent or non-finite clip")
    background = _shaped_noise(rng, n_samples, lambda f: 1.0 / np.sqrt(np.maximum(f, 20.0)), sample_rate)
    clip = dry + background * loudest_frame * 10.0 ** (rng.uniform(*BACKGROUND_NOISE_DB_RANGE) / 20.0)
    clip *= rng.uniform(*PEAK_LEVEL_RANGE) / float(np.max(np.abs(clip)))
    return clip.astype(np.float32)


# ----------------------------------------------------------------------------------------------------------
# text descriptions

_OBJECTS: dict[str, tuple[str, ...]] = {
    "wood": ("wooden table", "plank", "wooden door", "log", "wooden spoon", "wooden box", "chair",
             "floorboard", "wooden block", "branch", "wood"),
    "metal": ("steel pipe", "metal pot", "iron railing", "tin can", "frying pan", "metal bucket",
              "steel drum", "metal sheet", "radiator", "metal lid", "metal"),
    "glass": ("wine glass", "glass bottle", "window pane", "glass jar", "drinking glass", "glass bowl",
              "mirror", "vase", "glass"),
    "stone": ("granite slab", "pebble", "marble tile", "brick", "rock", "stone wall", "flagstone",
              "boulder", "stone"),
    "cardboard": ("cardboard box", "carton", "cardboard tube", "shoebox", "paper cup", "cardboard sheet",
                  "pizza box", "cardboard"),
    "plastic": ("plastic bottle", "plastic bucket", "plastic tray", "plastic toy", "plastic lid",
                "food container", "plastic chair", "plastic cup", "plastic"),
}
_MASS_NOUNS = frozenset(MATERIALS)  # "scraping cardboard", not "scraping a cardboard"

_ACTION_TEMPLATES: dict[str, tuple[str, ...]] = {
    "tapping": ("tapping on {obj}", "knocking on {obj}", "hitting {obj}", "striking {obj}",
                "tapping {obj} with a stick", "a knock on {obj}", "drumming on {obj}", "{obj} being tapped"),
    "rubbing": ("rubbing {obj}", "scraping {obj}", "scratching {obj}", "sliding a hand over {obj}",
                "{obj} being rubbed", "polishing {obj}", "sanding {obj}", "wiping {obj}"),
    "whirling": ("whirling {obj}", "swinging {obj} around", "spinning {obj} on a string", "twirling {obj}",
                 "{obj} whooshing through the air", "swishing {obj} around", "{obj} being whirled"),
    "destructing": ("smashing {obj}", "breaking {obj}", "crushing {obj}", "{obj} being destroyed",
                    "{obj} falling apart", "wrecking {obj}"),
}
_MATERIAL_DESTRUCTION_TEMPLATES: dict[str, tuple[str, ...]] = {
    "wood": ("splintering {obj}", "snapping {obj}"),
    "metal": ("denting {obj}", "crumpling {obj}"),
    "glass": ("shattering {obj}", "{obj} shattering"),
    "stone": ("{obj} crumbling", "cracking {obj}"),
    "cardboard": ("tearing up {obj}", "ripping {obj} apart"),
    "plastic": ("cracking {obj}", "snapping {obj}"),
}
_ACTION_MODIFIERS: dict[str, tuple[str, ...]] = {
    "tapping": ("gently", "loudly", "twice", "repeatedly", "with a finger"),
    "rubbing": ("slowly", "back and forth", "firmly", "with sandpaper"),
    "whirling": ("fast", "quickly", "round and round", "overhead"),
    "destructing": ("violently", "into pieces", "with a hammer", "noisily"),
}


def _noun_phrase(noun: str, rng: np.random.Generator) -> str:
    if noun in _MASS_NOUNS:
        return noun
    if rng.uniform() < 0.5:
        return f"the {noun}"
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def describe(material: str, action: str, rng: np.random.Generator) -> str:
    """A varied lower-case description, e.g. "knocking on a steel pipe" or "scraping cardboard"."""
    _check_factors(material, action)
    templates = _ACTION_TEMPLATES[action]
    if action == "destructing":
        templates = templates + _MATERIAL_DESTRUCTION_TEMPLATES[material]
    template = templates[int(rng.integers(len(templates)))]
    phrase = _noun_phrase(_OBJECTS[material][int(rng.integers(len(_OBJECTS[material])))], rng)
    text = template.format(obj=phrase)
    if rng.uniform() < 0.3:
        modifiers = _ACTION_MODIFIERS[action]
        text = f"{text} {modifiers[int(rng.integers(len(modifiers)))]}"
    return text


# ----------------------------------------------------------------------------------------------------------
# the data set on disk

_CLIP_STREAM = 0
_FOLD_STREAM = 1
POOL_MIN_CLIPS = 1000  # below this many clips, starting worker processes costs more than it saves
MAX_DEFAULT_WORKERS = 8
CLIPS_PER_TASK = 16
STAGING_PREFIX = ".synth-partial-"
# "spawn", not fork: the caller may hold threads (torch, BLAS) that a forked child does not inherit safely.
POOL_START_METHOD = "spawn"


def _clip_generators(seed: int, class_index: int, clip_index: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent (audio, text) generators of one clip, derived from (seed, class index, clip index) only."""
    sequence = np.random.SeedSequence(seed, spawn_key=(_CLIP_STREAM, class_index, clip_index))
    audio_sequence, text_sequence = sequence.spawn(2)
    return np.random.default_rng(audio_sequence), np.random.default_rng(text_sequence)


def _class_folds(seed: int, class_index: int, clips_per_class: int) -> list[int]:
    """Folds 1..N_FOLDS dealt round-robin over a shuffled order of the class's clips (sizes differ by <= 1)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_FOLD_STREAM, class_index)))
    folds = [0] * clips_per_class
    for position, clip_index in enumerate(rng.permutation(clips_per_class)):
        folds[int(clip_index)] = position % N_FOLDS + 1
    return folds


def _check_synthesize_arguments(clips_per_class: int, sample_rate: int, seconds: float, seed: int) -> None:
    if not _is_int(clips_per_class) or clips_per_class < 1:
        raise ConfigError(f"clips_per_class must be an integer >= 1, got {clips_per_class!r}")
    if not _is_int(seed) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    _check_timing(sample_rate, seconds)


def _wav_bytes(clip: np.ndarray, sample_rate: int) -> bytes:
    """The clip as a 16-bit PCM WAV file, encoded in memory (soundfile's own file writes fsync every file)."""
    buffer = io.BytesIO()
    sf.write(buffer, clip, sample_rate, subtype="PCM_16", format="WAV")
    return buffer.getvalue()


def _single_threaded_blas() -> contextlib.AbstractContextManager[object]:
    """Keep BLAS to one thread while rendering: the per-clip matrix products are tiny, and a multi-threaded
    BLAS on a busy machine makes them several times slower."""
    try:
        from threadpoolctl import threadpool_limits  # installed with scikit-learn
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _check_replaceable(out_dir: Path) -> None:
    """Refuse an ``out_dir`` that is a file or a directory holding more than a synthesized set."""
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a directory")
    if out_dir.is_dir():
        foreign = sorted(entry.name for entry in out_dir.iterdir()
                         if entry.name not in ("audio", "manifest.csv") and not entry.name.startswith(STAGING_PREFIX))
        if foreign:
            raise FileExistsError(
                f"{out_dir} holds more than a synthesized set (audio/, manifest.csv), e.g. {foreign[:5]}; "
                "choose an empty or new directory")


def _publish(staging: Path, out_dir: Path) -> None:
    """Swap the staged ``audio/`` and ``manifest.csv`` into ``out_dir``.

    The old manifest goes first and the new one comes last (each step a rename), so an interruption leaves
    either no manifest or a complete one that matches ``audio/``. The old audio ends up inside ``staging``.
    """
    manifest = out_dir / "manifest.csv"
    audio = out_dir / "audio"
    manifest.unlink(missing_ok=True)
    if audio.exists():
        os.replace(audio, staging / "audio.old")
    os.replace(staging / "audio", audio)
    os.replace(staging / "manifest.csv", manifest)


def _default_workers() -> int:
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        available = os.cpu_count() or 1
    return max(1, min(MAX_DEFAULT_WORKERS, available))


def _limit_blas_in_worker() -> None:
    """Process-pool initializer: one BLAS thread per worker process for the rest of its life."""
    with contextlib.suppress(ImportError):
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1, user_api="blas")


def _clip_path(class_index: int, clip_index: int, digits: int) -> str:
    """Path of a clip relative to the data set's folder, e.g. ``audio/metal_tapping_0007.wav``."""
    return f"audio/{CLASS_LABELS[class_index]}_{clip_index:0{digits}d}.wav"


def _render_batch(seed: int, class_index: int, clip_indices: list[int], sample_rate: int, seconds: float,
                  root: str, digits: int) -> list[str]:
    """Render some clips of one class and write them under ``root``; return their descriptions.

    This is the unit of work of a worker process.
    """
    material, action = CLASS_LABELS[class_index].split("_")
    descriptions = []
    for clip_index in clip_indices:
        audio_rng, text_rng = _clip_generators(seed, class_index, clip_index)
        clip = render_clip(material, action, audio_rng, sample_rate, seconds)
        Path(root, _clip_path(class_index, clip_index, digits)).write_bytes(_wav_bytes(clip, sample_rate))
        descriptions.append(describe(material, action, text_rng))
    return descriptions


def _rendered_batches(batches: list[tuple[int, list[int]]], seed: int, sample_rate: int, seconds: float,
                      root: Path, digits: int, workers: int) -> Iterator[list[str]]:
    """Render ``(class_index, clip_indices)`` batches, in this process or in ``workers`` processes, and yield
    their descriptions in batch order."""
    if workers <= 1:
        with _single_threaded_blas():
            for class_index, clip_indices in batches:
                yield _render_batch(seed, class_index, clip_indices, sample_rate, seconds, str(root), digits)
        return
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(POOL_START_METHOD),
                               initializer=_limit_blas_in_worker)
    try:
        futures = [pool.submit(_render_batch, seed, class_index, clip_indices, sample_rate, seconds, str(root),
                               digits)
                   for class_index, clip_indices in batches]
        for future in futures:
            yield future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def synthesize(out_dir: str | os.PathLike[str], clips_per_class: int = 40, sample_rate: int = 16000,
               seconds: float = 1.0, seed: int = 0, progress: bool = True, *, workers: int | None = None) -> Path:
    """Write ``clips_per_class`` clips of each of the 24 classes to ``out_dir``; return ``manifest.csv``'s path.

    Layout: ``out_dir/audio/<material>_<action>_<k>.wav`` (16-bit PCM) and ``out_dir/manifest.csv`` with
    columns ``path,label,description,fold,material,action``; ``fold`` (1-5) is balanced within every class.
    The output depends only on the arguments, not on ``workers``: every clip draws from its own generator,
    derived from ``(seed, class index, clip index)``, and the files are byte-identical for the same seed.

    ``workers`` processes render the clips (default: the available CPUs, at most 8; ``1`` renders in this
    process). Sets of fewer than :data:`POOL_MIN_CLIPS` (1000) clips always render in this process. Worker
    processes are started with "spawn", so a script that calls this at import time needs the usual
    ``if __name__ == "__main__":`` guard.

    The set is built in a hidden staging directory inside ``out_dir`` and renamed into place, so an
    interrupted run never leaves a partial manifest (an earlier set stays whole until the new one is
    complete). An earlier synthesized set in ``out_dir`` is replaced; a directory holding anything else is
    refused.
    """
    _check_synthesize_arguments(clips_per_class, sample_rate, seconds, seed)
    if workers is not None and (not _is_int(workers) or workers < 1):
        raise ConfigError(f"workers must be a positive integer or None, got {workers!r}")
    total_clips = len(CLASS_LABELS) * clips_per_class
    if total_clips < POOL_MIN_CLIPS:
        workers = 1
    elif workers is None:
        workers = _default_workers()
    out_dir = Path(out_dir).expanduser().absolute()
    _check_replaceable(out_dir)
    created_out_dir = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    for leftover in out_dir.glob(STAGING_PREFIX + "*"):  # from a run that was killed
        shutil.rmtree(leftover, ignore_errors=True)
    staging = out_dir / f"{STAGING_PREFIX}{uuid.uuid4().hex[:8]}"
    (staging / "audio").mkdir(parents=True)
    digits = max(4, len(str(clips_per_class - 1)))
    batches = [(class_index, list(range(start, min(start + CLIPS_PER_TASK, clips_per_class))))
               for class_index in range(len(CLASS_LABELS)) for start in range(0, clips_per_class, CLIPS_PER_TASK)]
    folds = [_class_folds(seed, class_index, clips_per_class) for class_index in range(len(CLASS_LABELS))]
    rows: list[tuple[str, str, str, int, str, str]] = []
    published = False
    try:
        rendered_batches = _rendered_batches(batches, seed, int(sample_rate), float(seconds), staging, digits,
                                             workers)
        with contextlib.closing(rendered_batches), tqdm(total=total_clips, desc="synthesizing", unit="clip",
                                                        disable=not progress) as bar:
            for (class_index, clip_indices), descriptions in zip(batches, rendered_batches):
                label = CLASS_LABELS[class_index]
                material, action = label.split("_")
                for clip_index, description in zip(clip_indices, descriptions):
                    rows.append((_clip_path(class_index, clip_index, digits), label, description,
                                 folds[class_index][clip_index], material, action))
                bar.update(len(clip_indices))
        with open(staging / "manifest.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(MANIFEST_COLUMNS)
            writer.writerows(rows)
        _publish(staging, out_dir)
        published = True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created_out_dir and not published:
            with contextlib.suppress(OSError):
                out_dir.rmdir()  # only if still empty
    return out_dir / "manifest.csv"
