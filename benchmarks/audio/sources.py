"""Real-ish audio made offline, and the transforms the audio harness applies to it.

- speech: Debian `espeak-ng` (voices x texts), rendered to WAV;
- music: a seeded melody + bass + drums written as MIDI (`mido`) and rendered by `fluidsynth` with
  Debian's General MIDI soundfont (`fluid-soundfont-gm`);
- soundtracks laid under real footage (opencv-doc's sample videos) with the ffmpeg CLI;
- transforms (ffmpeg): re-encode MP3/AAC at low bit rates, volume, resampling, noise at an SNR,
  cuts, speed changes, and picture-only edits (crop, mirror, overlay, black) for fusion.

Everything is deterministic for a seed and cached by a name that encodes its recipe.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import numpy as np

SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
FOOTAGE = Path("/usr/share/doc/opencv-doc/examples/data")
VOICES = ["en", "en-us", "de", "fr", "es", "it", "nl", "pl"]
TEXTS = [
    "The quick brown fox jumps over the lazy dog while the evening news plays in the background.",
    "Copy detection finds the same recording after it has been cut, re-encoded and uploaded again.",
    "Seven hundred and forty two ships left the harbour before the storm reached the northern coast.",
    "Please remember to water the plants, feed the cat and lock the back door before you leave.",
    "A soundtrack often survives when the picture is cropped, mirrored or covered by an overlay.",
    "The committee will meet on Thursday to discuss the budget for the new library building.",
]
#: sentences only the unrelated (never indexed) queries speak
UNRELATED_TEXTS = [
    "Fresh bread from the corner bakery smells wonderful on a cold winter morning.",
    "The orchestra tuned their instruments while the audience slowly found their seats.",
    "Mountain trails close in October when the first heavy snow covers the passes.",
]
RATE = 44100


def ensure_tools() -> None:
    missing = [t for t in ("espeak-ng", "fluidsynth", "ffmpeg") if shutil.which(t) is None]
    if missing or not SOUNDFONT.exists():
        raise RuntimeError(
            f"missing {missing or [str(SOUNDFONT)]}: `make setup` installs espeak-ng, fluidsynth, fluid-soundfont-gm"
        )


def _run(args: list[str]) -> None:
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{args[0]} failed ({proc.returncode}): {proc.stderr[-2000:]}")


def speech(out: Path, text: str, voice: str, speed: int = 160, pitch: int = 50) -> Path:
    """`text` spoken by espeak-ng's `voice` into a WAV file."""
    if not out.exists():
        tmp = out.with_suffix(".tmp.wav")
        _run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(tmp), text])
        tmp.rename(out)
    return out


def midi_song(out: Path, seed: int, seconds: float) -> Path:
    """A seeded song as MIDI: a melody on a random GM instrument, a bass line and drums."""
    import mido

    rng = random.Random(seed)
    mid = mido.MidiFile(ticks_per_beat=480)
    bpm = rng.choice([90, 100, 110, 120, 128, 140])
    beats = int(seconds * bpm / 60) + 1
    scale = [0, 2, 4, 5, 7, 9, 11, 12]
    root = rng.randint(52, 64)
    for channel, program, octave, step_beats in ((0, rng.randint(0, 80), 12, 0.5), (1, rng.randint(32, 39), -12, 1.0)):
        track = mido.MidiTrack()
        mid.tracks.append(track)
        if channel == 0:
            track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm)))
        track.append(mido.Message("program_change", program=program, channel=channel))
        t = 0.0
        while t < beats:
            note = root + octave + rng.choice(scale)
            dur = int(480 * step_beats * rng.choice([1, 1, 2]))
            track.append(mido.Message("note_on", note=note, velocity=rng.randint(70, 110), channel=channel, time=0))
            track.append(mido.Message("note_off", note=note, velocity=0, channel=channel, time=dur))
            t += dur / 480
    drums = mido.MidiTrack()
    mid.tracks.append(drums)
    pattern = [rng.choice([(36,), (38,), (36, 42), (38, 42), (42,), (46,), ()]) for _ in range(8)]  # per seed
    for beat in range(beats):
        for note in pattern[beat % 8]:
            drums.append(mido.Message("note_on", note=note, velocity=rng.randint(60, 100), channel=9, time=0))
        drums.append(mido.Message("note_off", note=42, velocity=0, channel=9, time=480))
    mid.save(str(out))
    return out


def music(out: Path, seed: int, seconds: float) -> Path:
    """The song of `seed` rendered by fluidsynth with the GM soundfont, trimmed to `seconds`."""
    if not out.exists():
        mid = midi_song(out.with_suffix(".mid"), seed, seconds)
        raw = out.with_suffix(".raw.wav")
        _run(["fluidsynth", "-ni", "-g", "0.8", "-r", str(RATE), "-F", str(raw), str(SOUNDFONT), str(mid)])
        _run(["ffmpeg", "-v", "error", "-y", "-i", str(raw), "-t", f"{seconds:.3f}", "-ac", "1", str(out)])
        raw.unlink()
    return out


def concat_audio(out: Path, parts: list[Path], gap: float = 0.4) -> Path:
    """Parts one after another (mono 44.1 kHz), `gap` seconds of silence between them."""
    if not out.exists():
        args = ["ffmpeg", "-v", "error", "-y"]
        for p in parts:
            args += ["-i", str(p)]
        chains = [
            f"[{i}:a]aresample={RATE},aformat=channel_layouts=mono,apad=pad_dur={gap}[a{i}]" for i in range(len(parts))
        ]
        joined = "".join(f"[a{i}]" for i in range(len(parts)))
        args += [
            "-filter_complex",
            ";".join(chains) + f";{joined}concat=n={len(parts)}:v=0:a=1[out]",
            "-map",
            "[out]",
            str(out),
        ]
        _run(args)
    return out


def footage() -> list[Path]:
    """opencv-doc's real sample videos (the picture the soundtracks are laid under)."""
    return sorted(p for p in FOOTAGE.glob("*.avi")) + sorted(FOOTAGE.glob("*.mp4"))


def with_picture(out: Path, audio: Path, video: Path, seconds: float | None = None) -> Path:
    """`audio` laid under `video`'s picture (looped to the audio's length), H.264 + AAC 128k in MP4."""
    if not out.exists():
        args = ["ffmpeg", "-v", "error", "-y", "-stream_loop", "-1", "-i", str(video), "-i", str(audio)]
        args += ["-map", "0:v", "-map", "1:a", "-shortest", "-vf", "scale=320:240,fps=25"]
        args += [
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-crf",
            "28",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-b:a",
            "128k",
        ]
        if seconds is not None:
            args += ["-t", f"{seconds:.3f}"]
        _run(args + [str(out)])
    return out


def noise_wav(out: Path, seconds: float, seed: int) -> Path:
    """White noise as a mono WAV (the background of the noise transform)."""
    if not out.exists():
        rng = np.random.default_rng(seed)
        _write_wav(out, np.clip(rng.normal(0, 6000, int(seconds * RATE)), -32767, 32767).astype(np.int16))
    return out


def _write_wav(out: Path, pcm: np.ndarray) -> None:
    import wave

    with wave.open(str(out), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm.tobytes())


#: transform name -> ffmpeg arguments between the input and the output (audio edits), or a
#: callable recipe; see `transform`.
AUDIO_TRANSFORMS = {
    "identity": [],
    "mp3_32k": ["-c:a", "libmp3lame", "-b:a", "32k"],
    "aac_48k": ["-c:a", "aac", "-b:a", "48k"],
    "mp3_64k": ["-c:a", "libmp3lame", "-b:a", "64k"],
    "volume_+6db": ["-af", "volume=6dB"],
    "volume_-6db": ["-af", "volume=-6dB"],
    "resample_8k": ["-af", "aresample=8000"],
    "resample_22k": ["-af", "aresample=22050"],
    # tempo: time-stretched, pitch kept; speed: played faster/slower, pitch follows (a sped-up video)
    "tempo_+5%": ["-af", "atempo=1.05"],
    "tempo_-5%": ["-af", "atempo=0.95"],
    "speed_+5%": ["-af", f"asetrate={RATE}*1.05,aresample={RATE}"],
    "speed_-5%": ["-af", f"asetrate={RATE}*0.95,aresample={RATE}"],
}
SUFFIX = {"mp3_32k": ".mp3", "mp3_64k": ".mp3", "aac_48k": ".m4a"}


def transform(out_dir: Path, src: Path, name: str, start: float, seconds: float, noise: Path | None = None) -> Path:
    """The excerpt [start, start + seconds) of `src` under audio transform `name` (or noise_10db
    mixing `noise` at 10 dB SNR), written as an audio file."""
    out = out_dir / f"{src.stem}.{name}.{start:.2f}+{seconds:.2f}{SUFFIX.get(name, '.wav')}"
    if out.exists():
        return out
    cut = ["-ss", f"{start:.3f}", "-t", f"{seconds:.3f}"]
    if name == "noise_10db":
        assert noise is not None
        # loudnorm-free SNR: both normalised to the same RMS, then noise at -10 dB
        flt = (
            "[0:a]aformat=channel_layouts=mono,dynaudnorm=f=500[s];[1:a]aformat=channel_layouts=mono,"
            "dynaudnorm=f=500,volume=-10dB[n];[s][n]amix=inputs=2:duration=first:normalize=0"
        )
        _run(["ffmpeg", "-v", "error", "-y", *cut, "-i", str(src), "-i", str(noise), "-filter_complex", flt, str(out)])
        return out
    _run(["ffmpeg", "-v", "error", "-y", *cut, "-i", str(src), "-vn", *AUDIO_TRANSFORMS[name], str(out)])
    return out


#: picture-only edits (the soundtrack is copied untouched) for fusion
PICTURE_EDITS = {
    "crop": "crop=iw*0.6:ih*0.6:iw*0.2:ih*0.2,scale=320:240",
    "mirror": "hflip",
    "overlay": "drawbox=x=0:y=0:w=iw:h=ih*0.6:color=red@0.9:t=fill",
    "black": "drawbox=x=0:y=0:w=iw:h=ih:color=black:t=fill",
}


def picture_edit(out_dir: Path, src: Path, name: str, start: float, seconds: float) -> Path:
    out = out_dir / f"{src.stem}.pic-{name}.{start:.2f}+{seconds:.2f}.mp4"
    if not out.exists():
        _run(
            ["ffmpeg", "-v", "error", "-y", "-ss", f"{start:.3f}", "-t", f"{seconds:.3f}", "-i", str(src)]
            + [
                "-vf",
                PICTURE_EDITS[name],
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-crf",
                "30",
                "-c:a",
                "copy",
                str(out),
            ]
        )
    return out
