"""Signal processing and the input layer of the `audio` data type, all in torch: windowed-sinc
resampling, the log-mel spectrogram (STFT + an HTK mel filterbank), training-only noise mixing
and SpecAugment, and the CNN over the spectrogram. Modules only: not a registered type (see audio.py)."""
from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import nn

from lamina.features.image_encoders import Backbone

SINC_ZEROS = 6  # zero crossings of the sinc on each side: longer filters cut off more sharply
ROLLOFF = 0.99  # the low-pass cut-off as a fraction of the lower Nyquist frequency (room for the transition)
LOG_FLOOR = 1e-6  # added before the log: silence reads about -14, not -inf


# --- resampling --------------------------------------------------------------------------------

@lru_cache(maxsize=32)
def _sinc_kernel(original: int, target: int) -> tuple[torch.Tensor, int]:
    """Polyphase filters for original -> target (both reduced by their gcd): one Hann-windowed sinc
    low-pass filter per output phase, (target, 1, taps), and the padding each side needs."""
    cutoff = min(original, target) * ROLLOFF
    half_width = math.ceil(SINC_ZEROS * original / cutoff)
    offsets = torch.arange(-half_width, half_width + original, dtype=torch.float64) / original  # (taps,)
    phases = -torch.arange(target, dtype=torch.float64).unsqueeze(1) / target  # (target, 1)
    time = ((phases + offsets) * cutoff).clamp(-SINC_ZEROS, SINC_ZEROS)  # in units of the cut-off's period
    window = torch.cos(time * math.pi / SINC_ZEROS / 2) ** 2  # Hann window over +-SINC_ZEROS zero crossings
    time = time * math.pi
    sinc = torch.where(time == 0, torch.ones_like(time), torch.sin(time) / torch.where(time == 0, 1.0, time))
    kernel = sinc * window * cutoff / original  # gain 1 in the pass band
    return kernel.unsqueeze(1).float(), half_width


def resample(waveform: torch.Tensor, original: int, target: int) -> torch.Tensor:
    """(S,) at `original` Hz -> (ceil(S * target / original),) at `target` Hz: band-limited
    windowed-sinc interpolation, run as one strided convolution over the polyphase filters (the
    method of torchaudio's and Julius Smith's resamplers; anti-aliasing built in)."""
    if original == target:
        return waveform
    divisor = math.gcd(original, target)
    original, target = original // divisor, target // divisor
    kernel, half_width = _sinc_kernel(original, target)
    padded = nn.functional.pad(waveform.view(1, 1, -1), (half_width, half_width + original))
    phases = nn.functional.conv1d(padded, kernel, stride=original)  # (1, target, frames)
    output = phases.transpose(1, 2).reshape(-1)  # interleave the phases: sample-by-sample output
    return output[:math.ceil(waveform.numel() * target / original)]


# --- the log-mel spectrogram -------------------------------------------------------------------

def hertz_to_mel(hertz: torch.Tensor) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + hertz / 700.0)  # the HTK formula (O'Shaughnessy 1987)


def mel_to_hertz(mel: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(mels: int, fft_size: int, rate: int, low: float, high: float) -> torch.Tensor:
    """(mels, fft_size // 2 + 1) triangular filters, peak 1, centred at points evenly spaced on the
    HTK mel scale between `low` and `high` Hz (each triangle spans its two neighbours' centres)."""
    edges = mel_to_hertz(torch.linspace(float(hertz_to_mel(torch.tensor(low))),
                                        float(hertz_to_mel(torch.tensor(high))), mels + 2, dtype=torch.float64))
    bins = torch.linspace(0, rate / 2, fft_size // 2 + 1, dtype=torch.float64)  # (F,)
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # (M, 1) each
    rising = (bins - left) / (centre - left)
    falling = (right - bins) / (right - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).float()


class LogMel(nn.Module):
    """(B, S) waveforms -> (B, mels, frames) log mel power: Hann-windowed STFT (window and hop in
    milliseconds), power spectrum, mel filterbank, log(x + 1e-6)."""

    def __init__(self, rate: int, mels: int, window_ms: float, hop_ms: float, low: float, high: float | None):
        super().__init__()
        self.window_length = max(int(round(rate * window_ms / 1000)), 2)
        self.hop = max(int(round(rate * hop_ms / 1000)), 1)
        self.fft_size = 2 ** math.ceil(math.log2(self.window_length))
        self.register_buffer("window", torch.hann_window(self.window_length), persistent=False)
        self.register_buffer("filterbank", mel_filterbank(mels, self.fft_size, rate, low, high or rate / 2),
                             persistent=False)

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        spectrum = torch.stft(waveforms.float(), self.fft_size, self.hop, self.window_length, self.window,
                              center=True, return_complex=True)  # (B, F, frames)
        power = spectrum.real ** 2 + spectrum.imag ** 2
        return torch.log(torch.matmul(self.filterbank, power) + LOG_FLOOR)  # (B, M, frames)


# --- training-only augmentation ----------------------------------------------------------------

def coloured_noise(count: int, samples: int, colour: str, device: torch.device) -> torch.Tensor:
    """(count, samples) noise: white (flat spectrum), pink (1/f power) or brown (1/f^2), shaped in
    the frequency domain."""
    white = torch.randn(count, samples, device=device)
    if colour == "white":
        return white
    spectrum = torch.fft.rfft(white)
    frequency = torch.arange(spectrum.shape[1], device=device).clamp_min(1).float()
    spectrum = spectrum / (frequency.sqrt() if colour == "pink" else frequency)
    return torch.fft.irfft(spectrum, n=samples)


def noise_clips(bank: torch.Tensor | None, count: int, samples: int, colour: str) -> torch.Tensor:
    """(count, samples) noise: random stretches of the noise files (concatenated in `bank`), or
    generated noise of `colour` when no files were given."""
    if bank is None or bank.numel() < samples:
        return coloured_noise(count, samples, colour, bank.device if bank is not None else torch.device("cpu"))
    starts = torch.randint(0, bank.numel() - samples + 1, (count,))
    return torch.stack([bank[start:start + samples] for start in starts.tolist()])


def mix_noise(waveforms: torch.Tensor, augment, bank: torch.Tensor | None) -> torch.Tensor:
    """Add noise to a random `noise` fraction of the clips at a signal-to-noise ratio drawn
    uniformly from augment.snr (dB), measured against each clip's own RMS."""
    count, samples = waveforms.shape
    chosen = torch.rand(count, device=waveforms.device) < augment.noise
    if not chosen.any():
        return waveforms
    noise = noise_clips(bank, count, samples, augment.noise_colour).to(waveforms)
    low, high = augment.snr
    snr = low + (high - low) * torch.rand(count, 1, device=waveforms.device)  # (B, 1) dB
    signal_rms = waveforms.pow(2).mean(1, keepdim=True).sqrt()
    noise_rms = noise.pow(2).mean(1, keepdim=True).sqrt().clamp_min(1e-8)
    scaled = noise * signal_rms / (noise_rms * 10 ** (snr / 20))
    return torch.where(chosen.unsqueeze(1), waveforms + scaled, waveforms)


def shift(waveforms: torch.Tensor, most: int) -> torch.Tensor:
    """Rotate each clip in time by up to `most` samples either way (the padding is silence, so a
    rotation moves the sound within the clip)."""
    amounts = torch.randint(-most, most + 1, (waveforms.shape[0],)).tolist()
    return torch.stack([torch.roll(clip, amount) for clip, amount in zip(waveforms, amounts)])


def spec_augment(spectrogram: torch.Tensor, augment) -> torch.Tensor:
    """SpecAugment's masks (Park et al. 2019): `time_masks` bands of up to `time_mask_width`
    frames and `frequency_masks` bands of up to `frequency_mask_width` mel bins set to 0, which
    after normalisation is the training mean."""
    count, _, mels, frames = spectrogram.shape  # (B, 1, M, F)
    keep = torch.ones(count, 1, mels, frames, device=spectrogram.device)
    for masks, width, size, axis in ((augment.time_masks, augment.time_mask_width, frames, 3),
                                     (augment.frequency_masks, augment.frequency_mask_width, mels, 2)):
        positions = torch.arange(size, device=spectrogram.device)
        for _ in range(masks):
            widths = torch.randint(0, min(width, size) + 1, (count,), device=spectrogram.device)
            starts = (torch.rand(count, device=spectrogram.device) * (size - widths + 1)).long()
            band = (positions >= starts[:, None]) & (positions < (starts + widths)[:, None])  # (B, size)
            shape = (count, 1, 1, size) if axis == 3 else (count, 1, size, 1)
            keep = keep * (~band).float().view(shape)
    return spectrogram * keep


# --- the encoder -------------------------------------------------------------------------------

class Encoder(nn.Module):
    """Waveforms (B, S) -> [training: shift, noise] -> log-mel -> per-bin normalisation (learned
    mean and std) -> [training: SpecAugment] -> CNN (the convolutions of image_encoders.Backbone)
    -> mean and max over time, frequency kept -> (B, E).

    Pooling over time only matters: a convolution is blind to where it is, and after pooling over
    frequency too, a 400 Hz tone and a 1.4 kHz tone would look alike; what is said may sit anywhere
    in the clip, but which frequency it has is the signal."""

    def __init__(self, options, stats: dict, noise: torch.Tensor | None = None):  # options: audio.Options
        super().__init__()
        self.log_mel = LogMel(options.sample_rate, options.mels, options.window_ms, options.hop_ms,
                              options.low_hz, options.high_hz)
        self.register_buffer("mean", torch.tensor(stats["mean"], dtype=torch.float32).view(1, 1, -1, 1),
                             persistent=False)  # rebuilt from stats.json
        self.register_buffer("std", torch.tensor(stats["std"], dtype=torch.float32).view(1, 1, -1, 1),
                             persistent=False)
        self.register_buffer("noise", noise, persistent=False)  # noise files: training only, never saved
        self.augment = options.augment
        self.shift_samples = int(round((options.augment.shift if options.augment else 0) * options.sample_rate))
        frames = stats["frames"]
        depth = options.depth or (1 if options.encoder == "cnn" else 2)
        backbone = Backbone(options.encoder, 1, options.width, depth, options.stages, (options.mels, frames))
        self.convolutions = backbone.layers[:-2]  # without its global average pool and flatten
        with torch.no_grad():
            channels, bins = self.convolutions(torch.zeros(1, 1, options.mels, frames)).shape[1:3]
        self.projection = nn.Linear(2 * channels * bins, options.embedding_size)
        self.output_size = options.embedding_size

    def spectrogram(self, waveforms: torch.Tensor) -> torch.Tensor:  # (B, S) -> (B, 1, M, F) normalised
        augment = self.augment if self.training else None
        if augment is not None and self.shift_samples:
            waveforms = shift(waveforms, self.shift_samples)
        if augment is not None and augment.noise > 0:
            waveforms = mix_noise(waveforms, augment, self.noise)
        spectrogram = (self.log_mel(waveforms).unsqueeze(1) - self.mean) / self.std
        if augment is not None and (augment.time_masks or augment.frequency_masks):
            spectrogram = spec_augment(spectrogram, augment)
        return spectrogram

    def from_spectrogram(self, spectrogram: torch.Tensor) -> torch.Tensor:  # (B, 1, M, F) -> (B, E)
        maps = self.convolutions(spectrogram)  # (B, C, M', F')
        pooled = torch.cat([maps.mean(3), maps.amax(3)], dim=1)  # (B, 2C, M')
        return self.projection(pooled.flatten(1))

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:  # (B, S) -> (B, E)
        return self.from_spectrogram(self.spectrogram(waveforms))
