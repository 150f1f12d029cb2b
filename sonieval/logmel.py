"""The weight-free log-mel frames sonieval compares clips on: the ``logmel`` metric embedding
(:class:`sonieval.metrics.embeddings.LogMelEmbedding`), the ``logmel_l1`` per-item measure and the study's
choice of familiarisation examples (:mod:`sonieval.study.familiarisation`) read the same frames, so the
transform stands on the ground floor, below the metrics and the study.

16 kHz mono; |STFT|^2 with a periodic Hann window of ``n_fft = 1024`` samples (64 ms), hop 320 samples
(20 ms, 50 frames/s), ``center=True`` with zero padding (5 s -> 251 frames); ``n_mels = 64``
Slaney-normalised mel filters (librosa ``filters.mel``, ``htk=False``) from ``fmin = 50`` to ``fmax = 8000``
Hz; ``log(mel + 1e-6)`` (natural log). One 64-d vector per frame.
"""

from __future__ import annotations

import functools

import numpy as np

from sonieval.audio import ENCODER_RATE, fit_length

__all__ = ["LogMel", "logmel_l1"]


class LogMel:
    """The transform: ``[n]`` or ``[B, n]`` float32 audio at 16 kHz -> ``[(B,) n_frames, n_mels]`` log-mel frames."""

    sample_rate = ENCODER_RATE
    n_fft = 1024
    hop_length = 320
    n_mels = 64
    fmin = 50.0
    fmax = 8000.0
    log_offset = 1e-6

    def __init__(self) -> None:
        self._fb = None

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        import torch

        if self._fb is None:
            import librosa

            fb = librosa.filters.mel(
                sr=self.sample_rate,
                n_fft=self.n_fft,
                n_mels=self.n_mels,
                fmin=self.fmin,
                fmax=self.fmax,
                htk=False,
                norm="slaney",
            )
            self._fb = torch.from_numpy(fb.astype(np.float32))
        x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
        one = x.ndim == 1
        if one:
            x = x[None]
        spec = (
            torch.stft(
                x,
                self.n_fft,
                self.hop_length,
                window=torch.hann_window(self.n_fft),
                center=True,
                pad_mode="constant",
                return_complex=True,
            )
            .abs()
            .pow_(2)
        )
        mel = torch.matmul(self._fb, spec).add_(self.log_offset).log_().transpose(1, 2)
        out = mel.numpy()
        return out[0] if one else out


def logmel_l1(evaluated: np.ndarray, original: np.ndarray) -> float:
    """Mean absolute difference of the two clips' log-mel frames (16 kHz; ``evaluated`` padded or trimmed to
    ``original``'s length): the ``logmel_l1`` per-item measure."""
    ev, _ = fit_length(np.asarray(evaluated, dtype=np.float32), len(original))
    orig = np.asarray(original, dtype=np.float32)
    lm = _shared()
    return float(np.mean(np.abs(lm(ev) - lm(orig))))


@functools.cache
def _shared() -> LogMel:
    """One transform for every pair, so its mel filterbank is built once per process, not once per item."""
    return LogMel()
