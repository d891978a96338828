"""dsu.audio sample-rate conversion and channel fitting."""

from __future__ import annotations

import numpy as np
import pytest

from dsu.audio import Resampler, conform_channels, resample
from dsu.errors import BadAudio
from helpers import noise

TARGET = 44100


def stream(resampler: Resampler, x: np.ndarray, seed: int = 1) -> list[np.ndarray]:
    """Feed x in random-sized blocks (including empty ones), then flush."""
    rng = np.random.default_rng(seed)
    outputs, start = [], 0
    while start < x.shape[1]:
        size = int(rng.integers(0, 9000))
        outputs.append(resampler.process(x[:, start : start + size]))
        start += size
    outputs.append(resampler.flush())
    return outputs


@pytest.mark.parametrize("rate", [8000, 22050, 48000, 192000])
@pytest.mark.parametrize("frames", [1, 12345, 96001])
def test_streaming_equals_one_shot_with_exact_lengths(rate, frames):
    x = noise(frames / TARGET, channels=2, amplitude=0.3)
    expected = round(frames * TARGET / rate)
    one_shot = resample(x, rate, TARGET)
    assert one_shot.shape == (2, expected) and one_shot.dtype == np.float32
    outputs = stream(Resampler(rate, TARGET, 2), x)
    assert all(o.shape[0] == 2 and o.dtype == np.float32 for o in outputs)
    streamed = np.concatenate(outputs, axis=1)
    assert streamed.shape == (2, expected)
    # Measured: identical (soxr runs the same filter both ways); allow float32 round-off.
    np.testing.assert_allclose(streamed, one_shot, rtol=0, atol=1e-6)


@pytest.mark.parametrize("rate", [8000, 22050, 48000, 192000])
def test_resampled_sine_matches_the_analytic_sine(rate):
    """A 1 kHz tone converted to 44.1 kHz equals the tone generated at 44.1 kHz."""
    seconds = 0.5
    x = np.sin(2 * np.pi * 1000 * np.arange(round(rate * seconds)) / rate)[None].astype(np.float32)
    y = resample(x, rate, TARGET)
    truth = np.sin(2 * np.pi * 1000 * np.arange(y.shape[1]) / TARGET)
    edge = 2000  # the filter rings at the signal's hard start and stop
    assert np.abs(y[0, edge:-edge] - truth[edge:-edge]).max() < 1e-4


def test_round_trip_restores_the_signal():
    t = np.arange(48000) / 48000
    x = (0.5 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 5000 * t))[None]
    x = x.astype(np.float32)
    back = resample(resample(x, 48000, TARGET), TARGET, 48000)
    assert back.shape == x.shape
    assert np.abs(back[0, 2000:-2000] - x[0, 2000:-2000]).max() < 1e-4


def test_equal_rates_pass_through_without_copy_or_delay():
    x = noise(1000 / TARGET, channels=2, amplitude=0.3)
    assert resample(x, TARGET, TARGET) is x
    r = Resampler(TARGET, TARGET, 2)
    assert r.process(x) is x
    assert r.flush().shape == (2, 0)


def test_resampler_rejects_misuse():
    with pytest.raises(ValueError):
        Resampler(0, TARGET, 2)
    r = Resampler(48000, TARGET, 2)
    with pytest.raises(ValueError, match="block"):
        r.process(noise(100 / TARGET, channels=1, amplitude=0.3))
    r.flush()
    with pytest.raises(RuntimeError):
        r.process(noise(100 / TARGET, channels=2, amplitude=0.3))


def test_empty_input_resamples_to_empty():
    assert resample(np.zeros((2, 0), np.float32), 48000, TARGET).shape == (2, 0)
    r = Resampler(48000, TARGET, 2)
    assert r.process(np.zeros((2, 0), np.float32)).shape == (2, 0)
    assert r.flush().shape == (2, 0)


# --- channels ---------------------------------------------------------------------------


def test_mono_is_duplicated():
    x = noise(100 / TARGET, channels=1, amplitude=0.3)
    y = conform_channels(x, 2, downmix=False)
    assert y.shape == (2, 100)
    np.testing.assert_array_equal(y[0], x[0])
    np.testing.assert_array_equal(y[1], x[0])


def test_matching_channels_are_returned_as_is():
    x = noise(100 / TARGET, channels=2, amplitude=0.3)
    assert conform_channels(x, 2, downmix=False) is x


def test_stereo_to_mono_is_the_mean():
    x = noise(100 / TARGET, channels=2, amplitude=0.3)
    np.testing.assert_allclose(conform_channels(x, 1, downmix=False)[0], x.mean(0), atol=1e-7)


def test_surround_requires_downmix_and_names_the_file():
    x = noise(100 / TARGET, channels=6, amplitude=0.3)
    with pytest.raises(BadAudio, match=r"has 6 channels.*--downmix") as err:
        conform_channels(x, 2, downmix=False, path="/music/live.flac")
    assert err.value.path == "/music/live.flac"
    y = conform_channels(x, 2, downmix=True)
    np.testing.assert_allclose(y, np.stack([x[0::2].mean(0), x[1::2].mean(0)]), atol=1e-7)
    mono = conform_channels(x, 1, downmix=True)
    np.testing.assert_allclose(mono[0], x.mean(0), atol=1e-7)


def test_unsupported_layouts_raise():
    with pytest.raises(BadAudio, match="takes 6 channels"):
        conform_channels(noise(10 / TARGET, channels=2, amplitude=0.3), 6, downmix=True)
