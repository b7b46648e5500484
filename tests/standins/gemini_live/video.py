"""Video the caller shows: still frames of a camera or screen, decoded, recorded and described.

livekit-plugins-google sends each frame as ``realtime_input.video``
``types.Blob(data=jpeg, mime_type="image/jpeg")``; the stand-in keeps its size and mean colour
so a reply can say what it saw and a test can tell the frame reached the model.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from .protocol import ProtocolError

SEEN_WITHIN_S = 5.0
"""A reply describes the last video frame if it came at most this many seconds before."""
#: Named colours a reply may call a frame's mean colour (nearest in RGB).
COLOUR_NAMES: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0), "white": (255, 255, 255), "grey": (128, 128, 128),
    "red": (220, 30, 30), "green": (30, 180, 30), "blue": (30, 30, 220),
    "yellow": (230, 220, 30), "cyan": (30, 210, 220), "magenta": (210, 30, 210),
    "orange": (240, 140, 20),
}


@dataclass(frozen=True)
class VideoFrameRecord:
    """One video frame (``realtime_input.video``) kept in :attr:`SessionRecord.video_frames`.

    Attributes:
        at: ``time.monotonic()`` on arrival.
        mime_type: as sent (livekit-plugins-google: ``image/jpeg``).
        format: what the bytes are, as Pillow reads them (``"JPEG"``, ``"PNG"``, ...).
        width / height: pixels.
        size: bytes of the encoded image.
        mean_rgb: the frame's mean colour, 0-255 per channel.
    """

    at: float
    mime_type: str
    format: str
    width: int
    height: int
    size: int
    mean_rgb: tuple[int, int, int]

    @property
    def colour_name(self) -> str:
        """The name in :data:`COLOUR_NAMES` nearest to :attr:`mean_rgb`."""
        return min(
            COLOUR_NAMES, key=lambda n: sum((a - b) ** 2 for a, b in zip(COLOUR_NAMES[n], self.mean_rgb, strict=True))
        )


def read_image(data: bytes) -> tuple[str, int, int, tuple[int, int, int]]:
    """Decode an image: (Pillow format name, width px, height px, mean RGB 0-255).

    Raises:
        ProtocolError: the bytes are not an image Pillow can read.
    """
    from PIL import Image, ImageStat, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            mean = ImageStat.Stat(image.convert("RGB")).mean
            return image.format or "", image.width, image.height, (round(mean[0]), round(mean[1]), round(mean[2]))
    except (UnidentifiedImageError, OSError) as e:
        raise ProtocolError(f"video frame of {len(data)} bytes is not a readable image: {e}") from e



def last_seen(frames: list[VideoFrameRecord], at: float) -> VideoFrameRecord | None:
    """The last of ``frames`` if it came at most :data:`SEEN_WITHIN_S` before ``at`` (monotonic s)."""
    return frames[-1] if frames and at - frames[-1].at <= SEEN_WITHIN_S else None
