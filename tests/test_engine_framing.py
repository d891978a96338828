"""Chunk planning, windows and streaming of the engine's framings (demucs, msst, mdx, uvr)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch

from dsu.archs.base import SeparationModel
from dsu.engine import EngineOptions, separate_array, separate_stream
from dsu.engine.framing import plan, reflect_index
from dsu.engine.options import FRAMINGS
from dsu.engine.window import chunk_window, fade_window, msst_fade_length

CHUNK = 200


class Probe(SeparationModel):
    """A network-free model: each stem is ``fn(chunk)``, so the framing alone is tested."""

    samplerate = 1000
    channels = 2

    def __init__(
        self,
        framing: str,
        *,
        segment: int = CHUNK,
        num_overlap: int = 4,
        fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.framing = framing
        # UVR's MDX framing always trims (n_fft // 2): its Hann windows are zero at the
        # chunk ends, which the trim keeps outside the track.
        self.trim = segment // 8 if framing == "mdx" else 0
        self.segment = segment
        self.num_overlap = num_overlap
        self.stems = ["same", "shaped"]
        self.fn = fn or position_dependent

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        return torch.stack([mix, self.fn(mix)], 1)

    def to(self, device: torch.device, dtype: torch.dtype = torch.float32) -> Probe:
        return self


def position_dependent(mix: torch.Tensor) -> torch.Tensor:
    """Depends on where a sample sits in its chunk, so chunk weights change the result."""
    ramp = torch.linspace(0.5, 1.5, mix.shape[-1])
    return torch.tanh(mix * ramp + mix.roll(1, -1))


def coverage(model: SeparationModel, length: int, **options: object) -> torch.Tensor:
    """Summed window weight at each track sample, ``[length]``."""
    total = torch.zeros(length)
    for chunk in plan(model, length, 0, EngineOptions(**options)):
        lo, hi = max(chunk.start, 0), min(chunk.start + chunk.length, length)
        if hi > lo:
            total[lo:hi] += chunk.window[lo - chunk.start : hi - chunk.start]
    return total


def test_every_framing_has_a_planner():
    for framing in FRAMINGS:
        assert plan(Probe(framing), 1000, 0, EngineOptions())
    with pytest.raises(ValueError, match="unknown framing"):
        plan(Probe("bogus"), 1000, 0, EngineOptions())


@pytest.mark.parametrize("framing", FRAMINGS)
@pytest.mark.parametrize("num_overlap", [1, 2, 4])
@pytest.mark.parametrize("length", [1, 2, 99, CHUNK - 1, CHUNK, CHUNK + 1, 299, 5 * CHUNK + 37])
def test_grid_covers_every_sample_with_positive_weight(framing, num_overlap, length):
    weight = coverage(Probe(framing, num_overlap=num_overlap), length)
    assert bool((weight > 0).all())


@pytest.mark.parametrize("num_overlap", [2, 4])
def test_msst_grid_long_track(num_overlap: int):
    step = CHUNK // num_overlap
    border = CHUNK - step
    length = 5 * CHUNK
    chunks = plan(Probe("msst", num_overlap=num_overlap), length, 0, EngineOptions())
    # The grid runs over the track mirrored by `border` at both ends; the chunks that
    # start in the right border (all their output cropped) are not run.
    assert [c.start for c in chunks] == list(range(-border, length, step))
    assert all(c.input_length == CHUNK for c in chunks)
    fade = CHUNK // 10
    first, middle = chunks[0].window, chunks[1].window
    assert first[0] == 1 and first[-1] == 0  # no fade-in on the first chunk
    assert middle[0] == 0 and middle[-1] == 0 and middle[fade:-fade].eq(1).all()
    # The last chunks run past the mirrored end and are padded: mirrored when more than
    # half a chunk is left, zeros otherwise.
    for chunk in chunks:
        expected = (
            CHUNK if chunk.start + CHUNK <= length + border else length + border - chunk.start
        )
        assert chunk.length == expected
        if chunk.length < CHUNK:
            assert chunk.tail == ("reflect" if chunk.length > CHUNK // 2 else "constant")
    # Mirroring reaches back no further than the track's start, or its last border + 1
    # samples: the input buffer need not hold more.
    for chunk in chunks:
        if chunk.start + chunk.length <= length:
            assert chunk.source_start == max(chunk.start, 0)
        else:
            mirrored_end = 2 * (length - 1) - (chunk.start + chunk.length - 1)
            assert chunk.source_start == min(chunk.start, mirrored_end)
            assert chunk.source_start >= length - border - 1


@pytest.mark.parametrize(
    ("num_overlap", "length", "run", "full_grid"),
    [
        (2, 5 * CHUNK, 11, 12),  # starts -100 .. 900; 1000 lies in the right border
        (4, 5 * CHUNK, 23, 26),  # starts -150 .. 950; 1000, 1050, 1100 skipped
        (2, 5 * CHUNK + 1, 12, 13),  # 1000 keeps the track's last sample; 1100 skipped
        (4, 300, 6, 6),  # not mirrored: nothing to skip
    ],
)
def test_msst_skips_chunks_wholly_in_a_border(num_overlap, length, run, full_grid):
    step = CHUNK // num_overlap
    border = CHUNK - step
    pad = border if length > 2 * border else 0
    assert len(range(0, length + 2 * pad, step)) == full_grid  # demix's own grid
    chunks = plan(Probe("msst", num_overlap=num_overlap), length, 0, EngineOptions())
    assert len(chunks) == run
    assert all(c.start < length and c.start + c.length > 0 for c in chunks)


def test_msst_skipped_chunks_keep_the_last_chunks_window():
    # The last chunk of demix's grid (no fade-out) lies in the border and is skipped; the
    # last one run keeps its fade-out, which falls wholly past the track's end.
    chunks = plan(Probe("msst", num_overlap=2), 5 * CHUNK, 0, EngineOptions())
    last = chunks[-1]
    assert last.window[-1] == 0
    assert last.start + last.length - CHUNK // 10 >= 5 * CHUNK


def test_msst_short_track_is_not_mirrored():
    # demix mirrors only a track longer than 2 * border (here 300 samples).
    chunks = plan(Probe("msst", num_overlap=4), 300, 0, EngineOptions())
    assert chunks[0].start == 0
    assert [c.start for c in chunks] == [0, 50, 100, 150, 200, 250]
    assert [c.length for c in chunks] == [200, 200, 200, 150, 100, 50]
    assert [c.tail for c in chunks[3:]] == ["reflect", "constant", "constant"]
    mirrored = plan(Probe("msst", num_overlap=4), 301, 0, EngineOptions())
    assert mirrored[0].start == -150


def test_msst_single_chunk_has_no_fades():
    (chunk,) = plan(Probe("msst", num_overlap=1), CHUNK, 0, EngineOptions())
    assert chunk.start == 0 and chunk.length == CHUNK
    assert chunk.window.eq(1).all()


def test_msst_overlap_and_segment_override_the_model():
    model = Probe("msst", num_overlap=4)
    chunks = plan(model, 2000, 0, EngineOptions(overlap=0.3))
    step = round(CHUNK * 0.7)
    assert chunks[1].start - chunks[0].start == step
    assert chunks[0].start == -(CHUNK - step)
    chunks = plan(model, 2000, 0, EngineOptions(segment=0.1))  # 100 samples at 1 kHz
    assert chunks[0].input_length == 100 and chunks[1].start - chunks[0].start == 25
    # No overlap at all: nothing to cross-fade, so no fades that would weigh samples 0.
    chunks = plan(model, 2000, 0, EngineOptions(overlap=0.0))
    assert all(c.window.eq(1).all() for c in chunks)


def test_demucs_grid_unchanged():
    model = Probe("demucs")
    chunks = plan(model, 1000, 0, EngineOptions())
    stride = int(0.75 * CHUNK)
    assert [c.start for c in chunks] == list(range(0, 1000, stride))
    assert all(c.tail is None and c.input_start == c.start for c in chunks)
    assert torch.equal(chunks[0].window, chunk_window("triangle", CHUNK))


def test_fade_window_matches_msst_example():
    # The example of msst.utils.model_utils._getWindowingArray's docstring.
    expected = torch.tensor([0.0, 0.5, 1, 1, 1, 1, 1, 1, 0.5, 0.0])
    assert torch.equal(fade_window(10, 3), expected)
    assert torch.equal(fade_window(10, 3, fade_in=False)[:3], torch.ones(3))
    assert torch.equal(fade_window(10, 3, fade_out=False)[-3:], torch.ones(3))
    assert torch.equal(fade_window(10, 0), torch.ones(10))
    assert msst_fade_length(1000, 250) == 100
    assert msst_fade_length(1000, 999) == 0


def test_chunk_window_positive():
    for length in (1, 2, 7, 200):
        assert bool((chunk_window("triangle", length) > 0).all())


def test_reflect_index():
    positions = torch.arange(-4, 9)
    assert reflect_index(positions, 5).tolist() == [4, 3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1, 0]
    assert reflect_index(positions, 1).eq(0).all()
    # Within one mirror length it is torch's reflect padding.
    x = torch.arange(6.0)[None, None]
    padded = torch.nn.functional.pad(x, (4, 4), mode="reflect")[0, 0]
    assert torch.equal(x[0, 0, reflect_index(torch.arange(-4, 10), 6)], padded)


def mixture(length: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 0.5 * torch.randn(2, length, generator=generator)


@pytest.mark.parametrize("framing", FRAMINGS)
@pytest.mark.parametrize("length", [1, 37, CHUNK, CHUNK + 1, 7 * CHUNK + 13])
def test_identity_network_returns_the_mixture(framing: str, length: int):
    mix = mixture(length)
    for num_overlap in (1, 2, 4):
        out = separate_array(Probe(framing, num_overlap=num_overlap), mix)
        assert out.shape == (2, 2, length)
        torch.testing.assert_close(out[0], mix, rtol=1e-6, atol=1e-6)
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("framing", FRAMINGS)
def test_batch_sizes_give_identical_output(framing: str):
    mix = mixture(9 * CHUNK + 51, seed=1)
    model = Probe(framing)
    one = separate_array(model, mix, options=EngineOptions(batch_size=1))
    three = separate_array(model, mix, options=EngineOptions(batch_size=3))
    assert torch.equal(one, three)


@pytest.mark.parametrize("framing", FRAMINGS)
def test_streaming_small_blocks_equals_whole_array(framing: str):
    mix = mixture(9 * CHUNK + 51, seed=2)
    model = Probe(framing, num_overlap=2)
    whole = separate_array(model, mix, block=mix.shape[-1])
    small = separate_array(model, mix, block=7)
    assert torch.equal(whole, small)
    # The chunk weights matter: a plain mean of the chunks would differ.
    assert not torch.allclose(whole[1], position_dependent(mix[None])[0], atol=1e-3)


def test_msst_shifts_still_reconstruct():
    mix = mixture(5 * CHUNK + 3, seed=3)
    out = separate_array(Probe("msst"), mix, options=EngineOptions(shifts=2, max_shift=0.05))
    torch.testing.assert_close(out[0], mix, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("framing", FRAMINGS)
def test_memory_stays_a_few_chunks(framing: str):
    """Input read ahead of the output emitted stays bounded on a 60-chunk track."""
    length, block = 60 * CHUNK + 11, 50
    array = mixture(length, seed=4).numpy()
    read = 0
    lags = []

    def blocks() -> Iterator[np.ndarray]:
        nonlocal read
        for i in range(0, length, block):
            read += min(block, length - i)
            yield array[:, i : i + block]

    emitted = 0

    def sink(stems: torch.Tensor, _mix: torch.Tensor) -> None:
        nonlocal emitted
        emitted += stems.shape[-1]
        lags.append(read - emitted)

    separate_stream(Probe(framing), blocks(), length, sink)
    assert emitted == length
    assert len(lags) > 20
    assert max(lags) <= 3 * CHUNK + block
