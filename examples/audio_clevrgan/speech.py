"""Offline text-to-speech for spoken captions: espeak-ng (from the ``espeakng-loader`` wheel) via ctypes.

espeak-ng is GPL-3.0, so it is an optional dependency: ``pip install 'negmine[speech]'``. Nothing is
downloaded at run time; the wheel carries ``libespeak-ng`` and its voice data.

How one utterance is made (all under one process-wide lock, since espeak-ng is a global library):

1. load the library, initialise it in synchronous mode (output mode 2) with the data path the package
   reports, and register a callback that receives the 16-bit PCM chunks;
2. select the voice by name (``en``, ``en-us``, ``en+f3``, ...), set rate (words per minute) and pitch
   (0-100), synthesize, synchronise;
3. resample from espeak's 22,050 Hz to 16 kHz with ``torchaudio.functional.resample``.

Determinism. espeak-ng keeps hidden synthesis state in library globals between utterances (pitch
flutter phase, wave phase, resonator and echo state ...), and neither ``espeak_Terminate`` +
``espeak_Initialize`` nor ``espeak_ng_InitializeOutput`` resets it: measured with espeak-ng 1.52, the same
text and voice gave different samples (and lengths differing by ~20 samples) on consecutive calls. So the
:class:`Synthesizer` copies the shared library once per process to a private file and loads a fresh
instance of that copy for every utterance (``dlopen`` -> synthesize -> ``dlclose``), with espeak's own
random generator seeded identically each time. That costs about 3-4 ms per utterance and makes the output
a pure function of (text, speaker), within and across processes.
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import os
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "SAMPLE_RATE",
    "NATIVE_SAMPLE_RATE",
    "SpeechUnavailableError",
    "SpeechError",
    "Speaker",
    "SPEAKERS",
    "get_speaker",
    "Synthesizer",
    "synthesize",
    "word_times",
    "resample_to_16k",
    "write_wav",
]

SAMPLE_RATE = 16000
NATIVE_SAMPLE_RATE = 22050
INSTALL_HINT = "pip install 'negmine[speech]'"

# espeak-ng constants (speak_lib.h).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_EE_OK = 0
_EE_NOT_FOUND = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE = 1
_PARAM_PITCH = 3
_RAND_SEED = 1

_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1


class _Event(ctypes.Structure):
    """espeak_EVENT (speak_lib.h): the callback receives an array of them, ended by type 0."""

    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8)]


class SpeechUnavailableError(ImportError):
    """espeak-ng (the optional ``espeakng-loader`` package) is not installed or cannot be loaded."""


class SpeechError(RuntimeError):
    """espeak-ng refused a request (unknown voice, bad parameter, failed synthesis)."""


@dataclass(frozen=True)
class Speaker:
    """A synthetic speaker: an espeak-ng voice name (``language[+variant]``), a rate and a pitch.

    Attributes:
        name: a short identifier used in file names and configs.
        voice: espeak-ng voice, e.g. ``"en-us"`` or ``"en+f3"`` (variant files live in ``voices/!v``).
        rate: speaking rate in words per minute (espeak accepts 80-450; 175 is its default).
        pitch: base pitch, 0-100 (50 is the voice's own).
    """

    name: str
    voice: str
    rate: int
    pitch: int


# A fixed panel of distinct voices: accents (US, British, Received Pronunciation, Scottish, New York,
# Caribbean) x voice variants (male m1-m7, female f1-f5), at moderate rates for intelligibility.
SPEAKERS: tuple[Speaker, ...] = (
    Speaker("us_m", "en-us", 165, 45),
    Speaker("us_f3", "en-us+f3", 170, 55),
    Speaker("gb_m3", "en+m3", 150, 40),
    Speaker("gb_f2", "en+f2", 160, 60),
    Speaker("rp_m1", "en-gb-x-rp+m1", 155, 50),
    Speaker("scot_f4", "en-gb-scotland+f4", 160, 55),
    Speaker("nyc_m7", "en-us-nyc+m7", 175, 45),
    Speaker("carib_f5", "en-029+f5", 150, 65),
    Speaker("us_m2", "en-us+m2", 145, 35),
    Speaker("gb_f1", "en+f1", 180, 50),
)

_SPEAKERS_BY_NAME = {s.name: s for s in SPEAKERS}

# Language tags that espeak-ng's SetVoiceByName does not know although the voice exists under another
# file name (its British English voice is the file "en", whose language is en-gb).
_VOICE_ALIASES = {"en-gb": "en", "en-uk": "en"}


def _espeak_voice_name(voice: str) -> str:
    base, plus, variant = voice.partition("+")
    return _VOICE_ALIASES.get(base.lower(), base) + plus + variant


def get_speaker(speaker: str | int | Speaker) -> Speaker:
    """Look a speaker up by name (``"us_f3"``), by index into :data:`SPEAKERS`, or pass one through."""
    if isinstance(speaker, Speaker):
        return speaker
    if isinstance(speaker, (int, np.integer)):
        if not 0 <= int(speaker) < len(SPEAKERS):
            raise ValueError(f"speaker index {speaker} out of range 0..{len(SPEAKERS) - 1}")
        return SPEAKERS[int(speaker)]
    try:
        return _SPEAKERS_BY_NAME[speaker]
    except KeyError:
        raise ValueError(f"unknown speaker {speaker!r}; known: {sorted(_SPEAKERS_BY_NAME)}") from None


def _import_loader():
    try:
        import espeakng_loader
    except ImportError as exc:
        raise SpeechUnavailableError(
            "speech synthesis needs espeak-ng from the optional 'espeakng-loader' package, which is not "
            f"installed; install it with: {INSTALL_HINT}"
        ) from exc
    return espeakng_loader


def _unload(handle: int) -> None:
    import _ctypes

    if sys.platform == "win32":
        _ctypes.FreeLibrary(handle)
    else:
        _ctypes.dlclose(handle)


def _is_mapped(path: str) -> bool | None:
    """Whether ``path`` is still mapped into this process (None where /proc is unavailable)."""
    try:
        with open("/proc/self/maps") as f:
            return any(path in line for line in f)
    except OSError:
        return None


class Synthesizer:
    """Process-wide espeak-ng speech synthesizer. Get it with :meth:`Synthesizer.instance`.

    Thread-safe (a lock serialises utterances) and fork-safe (the library is loaded only while an
    utterance is being made, and a forked child gets a fresh lock).
    """

    _instance: Synthesizer | None = None
    _instance_lock = threading.Lock()

    def __init__(self) -> None:
        loader = _import_loader()
        try:
            library = Path(loader.get_library_path())
            self._data_path = str(loader.get_data_path())
        except Exception as exc:  # a broken install: say so, with the fix
            raise SpeechUnavailableError(f"espeakng-loader is installed but unusable ({exc}); reinstall: {INSTALL_HINT}") from exc
        if not library.is_file():
            raise SpeechUnavailableError(f"espeak-ng library missing at {library}; reinstall: {INSTALL_HINT}")
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._tmpdir = tempfile.mkdtemp(prefix="negmine-espeak-")
        self._library = os.path.join(self._tmpdir, "private-" + library.name)
        shutil.copyfile(library, self._library)
        atexit.register(self._cleanup, self._pid, self._tmpdir)
        variants_dir = Path(self._data_path) / "voices" / "!v"
        self._variants = {p.name for p in variants_dir.iterdir()} if variants_dir.is_dir() else set()
        self._unload_checked = False
        self._chunks: list[np.ndarray] = []
        self._words: list[tuple[int, int, int]] = []  # (first character, characters, start in ms) per spoken word
        self._callback = _SYNTH_CALLBACK(self._on_audio)

    @classmethod
    def instance(cls) -> Synthesizer:
        """The synthesizer of this process (created on first use; re-created after ``fork``)."""
        with cls._instance_lock:
            if cls._instance is None or cls._instance._pid != os.getpid():
                cls._instance = cls()
            return cls._instance

    @staticmethod
    def _cleanup(pid: int, tmpdir: str) -> None:
        if os.getpid() == pid:
            shutil.rmtree(tmpdir, ignore_errors=True)

    def _on_audio(self, wav, numsamples, events) -> int:
        if numsamples > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
        if events:
            array = ctypes.cast(events, ctypes.POINTER(_Event))
            for i in range(4096):  # the list ends with a type-0 event; the bound only guards a malformed list
                event = array[i]
                if event.type == _EVENT_LIST_TERMINATED:
                    break
                if event.type == _EVENT_WORD:
                    self._words.append((event.text_position - 1, event.length, event.audio_position))
        return 0  # 0 = continue synthesis

    def _check_voice(self, voice: str) -> None:
        if "+" in voice:
            variant = voice.split("+", 1)[1]
            if self._variants and variant not in self._variants:
                raise SpeechError(
                    f"unknown espeak-ng voice variant {variant!r} in {voice!r}; "
                    f"variants are the files in {Path(self._data_path) / 'voices' / '!v'}"
                )

    def synthesize_native(self, text: str, speaker: str | int | Speaker) -> np.ndarray:
        """Speak ``text`` at espeak's native rate.

        Returns:
            int16 array of shape (N,), mono PCM at :data:`NATIVE_SAMPLE_RATE` (22,050 Hz).
        """
        return self._native(text, speaker)[0]

    def _native(self, text: str, speaker: str | int | Speaker) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
        """(native-rate samples, (first character, characters, start in ms) of each word event)."""
        spk = get_speaker(speaker)
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"text to speak must be a non-empty string, got {text!r}")
        if "\x00" in text:
            raise ValueError("text to speak contains a NUL character")
        self._check_voice(spk.voice)
        if self._pid != os.getpid():  # used through a stale reference after fork
            self._lock = threading.Lock()
            self._pid = os.getpid()
        with self._lock:
            return self._speak_fresh_library(text, spk)

    def word_times(self, text: str, speaker: str | int | Speaker) -> tuple[float, list[tuple[int, int, float]]]:
        """Where each word of ``text`` starts when ``speaker`` says it (the utterance :meth:`synthesize` makes).

        Returns:
            ``(duration, words)``: the utterance's length in seconds and, per word espeak-ng spoke,
            ``(first character in text, characters, start in seconds)`` from its word events, in the order spoken.
            A word lasts until the next one starts (or the utterance ends), pauses included. No resampling is
            done, so this costs about a tenth of :meth:`synthesize` (10 ms against 0.15 s a caption on the 2-core
            development machine, beside two training runs).
        """
        pcm, words = self._native(text, speaker)
        return len(pcm) / NATIVE_SAMPLE_RATE, [(first, length, ms / 1000.0) for first, length, ms in words]

    def synthesize(self, text: str, speaker: str | int | Speaker) -> np.ndarray:
        """Speak ``text`` and resample to 16 kHz.

        Returns:
            int16 array of shape (M,), mono PCM at :data:`SAMPLE_RATE` (16 kHz), M ~= N * 16000 / 22050.
        """
        return resample_to_16k(self.synthesize_native(text, speaker))

    def _speak_fresh_library(self, text: str, spk: Speaker) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
        try:
            lib = ctypes.CDLL(self._library, mode=getattr(os, "RTLD_LOCAL", 0))
        except OSError as exc:
            raise SpeechUnavailableError(f"cannot load espeak-ng ({exc}); reinstall: {INSTALL_HINT}") from exc
        handle = lib._handle
        self._chunks, self._words = [], []
        try:
            lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
            lib.espeak_Initialize.restype = ctypes.c_int
            lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
            lib.espeak_SetSynthCallback.restype = None
            lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
            lib.espeak_ng_SetRandSeed.restype = None
            lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
            lib.espeak_SetVoiceByName.restype = ctypes.c_int
            lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
            lib.espeak_SetParameter.restype = ctypes.c_int
            lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                         ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
            lib.espeak_Synth.restype = ctypes.c_int
            lib.espeak_Synchronize.restype = ctypes.c_int
            lib.espeak_Terminate.restype = ctypes.c_int

            rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, self._data_path.encode(), 0)
            if rate != NATIVE_SAMPLE_RATE:
                raise SpeechError(
                    f"espeak-ng failed to initialise with data at {self._data_path} (returned {rate}); "
                    f"reinstall: {INSTALL_HINT}"
                )
            try:
                lib.espeak_SetSynthCallback(self._callback)
                lib.espeak_ng_SetRandSeed(_RAND_SEED)
                status = lib.espeak_SetVoiceByName(_espeak_voice_name(spk.voice).encode())
                if status != _EE_OK:
                    why = "not found" if status == _EE_NOT_FOUND else f"error {status}"
                    raise SpeechError(f"espeak-ng voice {spk.voice!r} of speaker {spk.name!r}: {why}")
                for param, value, label in ((_PARAM_RATE, spk.rate, "rate"), (_PARAM_PITCH, spk.pitch, "pitch")):
                    if lib.espeak_SetParameter(param, int(value), 0) != _EE_OK:
                        raise SpeechError(f"espeak-ng rejected {label}={value} of speaker {spk.name!r}")
                buf = text.encode("utf-8") + b"\x00"
                status = lib.espeak_Synth(buf, len(buf), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
                if status != _EE_OK:
                    raise SpeechError(f"espeak-ng synthesis failed (error {status}) for text {text[:60]!r}")
                if lib.espeak_Synchronize() != _EE_OK:
                    raise SpeechError("espeak-ng failed to synchronise")
            finally:
                lib.espeak_Terminate()
        finally:
            del lib
            _unload(handle)
        if not self._unload_checked:
            # Determinism rests on the library really being unloaded; check once per process.
            if _is_mapped(self._library):
                raise SpeechError(
                    f"{self._library} stayed loaded after dlclose, so espeak-ng's state would leak between "
                    "utterances and speech would not be reproducible"
                )
            self._unload_checked = True
        chunks, self._chunks = self._chunks, []
        words, self._words = self._words, []
        return (np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)), words


@functools.lru_cache(maxsize=4)
def _resampler(orig_sample_rate: int, new_sample_rate: int):
    import torchaudio

    # The transform runs torchaudio.functional.resample's algorithm with its sinc kernel computed once:
    # about 1 ms per caption instead of 50 ms when the kernel is rebuilt on every call.
    return torchaudio.transforms.Resample(orig_sample_rate, new_sample_rate)


def resample_to_16k(pcm: np.ndarray, orig_sample_rate: int = NATIVE_SAMPLE_RATE) -> np.ndarray:
    """Resample int16 PCM to 16 kHz with torchaudio's windowed-sinc (Hann, width 6) resampler.

    Same algorithm as ``torchaudio.functional.resample`` with the kernel cached (max difference ~4e-6 of
    full scale, i.e. below one int16 step).

    Args:
        pcm: int16 array of shape (N,) at ``orig_sample_rate``.

    Returns:
        int16 array of shape (ceil(N * 16000 / orig_sample_rate),), rounded and clipped to int16.
    """
    import torch

    pcm = np.asarray(pcm)
    if pcm.dtype != np.int16 or pcm.ndim != 1:
        raise ValueError(f"expected 1-D int16 PCM, got dtype {pcm.dtype} shape {pcm.shape}")
    if orig_sample_rate == SAMPLE_RATE or pcm.size == 0:
        return pcm.copy()
    x = torch.from_numpy(pcm.astype(np.float32) / 32768.0)
    with torch.no_grad():
        y = _resampler(int(orig_sample_rate), SAMPLE_RATE)(x).numpy()
    return np.clip(np.round(y * 32768.0), -32768, 32767).astype(np.int16)


def synthesize(text: str, speaker: str | int | Speaker = 0) -> np.ndarray:
    """Speak ``text`` with one of :data:`SPEAKERS` (or any :class:`Speaker`).

    Returns:
        int16 array of shape (M,), mono PCM at 16 kHz. Identical for identical (text, speaker).
    """
    return Synthesizer.instance().synthesize(text, speaker)


def word_times(text: str, speaker: str | int | Speaker = 0) -> tuple[float, list[tuple[int, int, float]]]:
    """``(duration in seconds, [(first character, characters, start in seconds) per word])`` of the utterance
    :func:`synthesize` makes; see :meth:`Synthesizer.word_times`."""
    return Synthesizer.instance().word_times(text, speaker)


def write_wav(path: str | os.PathLike, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write mono int16 PCM of shape (N,) as a 16-bit PCM WAV file with ``soundfile``."""
    import soundfile

    samples = np.asarray(samples)
    if samples.dtype != np.int16 or samples.ndim != 1:
        raise ValueError(f"write_wav expects 1-D int16 samples, got dtype {samples.dtype} shape {samples.shape}")
    soundfile.write(os.fspath(path), samples, sample_rate, subtype="PCM_16", format="WAV")
