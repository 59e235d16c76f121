"""The source's streams: which one is the video, and how the copy pass can
write them (the container that takes them by copy, the audio to transcode).

Imports nothing from ``facecut.cut``.
"""

from __future__ import annotations

import av


def _main_video(container):
    vids = [s for s in container.streams.video if not (s.disposition & av.stream.Disposition.attached_pic)]
    return vids[0] if vids else None


def _audio(container) -> list:
    """The audio streams clips carry: those FFmpeg has a codec for (a stream of a
    codec it does not know can be neither copied into a container nor decoded)."""
    return [a for a in container.streams.audio if a.codec_context is not None]


def _unknown_audio_note(container) -> str:
    """What the clips leave out of the source's audio, in words ("" when nothing)."""
    left = [str(a.index) for a in container.streams.audio if a.codec_context is None]
    return f"audio stream {', '.join(left)} left out (a codec FFmpeg does not know)" if left else ""


def _accepts(fmt: str, streams) -> str | None:
    """None when a ``fmt`` muxer takes every stream by copy, else the codec it refuses."""
    import io

    probe = av.open(io.BytesIO(), "w", format=fmt)
    try:
        for s in streams:
            try:
                probe.add_stream_from_template(s)
            except ValueError:
                return s.codec_context.codec.name if s.codec_context else "?"
    finally:
        try:
            probe.close()
        except Exception:  # noqa: BLE001, S110 - nothing was written
            pass
    return None


# Audio that MP4 players handle badly or MP4 refuses: transcoded to AAC by the copy pass.
_AAC_TRANSCODE = ("wmav1", "wmav2", "wmapro", "wmavoice", "mp2", "adpcm_ima_wav", "adpcm_ms")


def _copy_plan(video, audios) -> tuple[str | None, set[int], str]:
    """How the copy pass writes a source: (container or None when no container
    takes the video by copy, audio stream indexes to transcode to AAC, note).

    MP4 whenever it takes the video; audio MP4 can't hold (WMA, PCM, MP2,
    ADPCM...) is transcoded to AAC; MKV only for a video codec MP4 refuses."""
    refused = _accepts("mp4", [video])
    if refused is None:
        transcode = {a.index for a in audios
                     if _accepts("mp4", [a]) is not None or a.codec_context.name in _AAC_TRANSCODE
                     or a.codec_context.name.startswith("pcm_")}
        names = sorted({a.codec_context.name for a in audios if a.index in transcode})
        note = f"audio {', '.join(names)} transcoded to AAC (MP4 cannot hold it)" if names else ""
        return "mp4", transcode, note
    if _accepts("matroska", [video, *audios]) is None:
        return "mkv", set(), f"codec {refused} cannot go into MP4: clips written as MKV"
    return None, set(), f"codec {refused} cannot be stream-copied into MP4 or MKV: clips re-encoded (H.264 + AAC)"
