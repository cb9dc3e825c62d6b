"""Agent photos: validated, decoded and re-encoded (never stored as uploaded), cropped square, 256×256."""

from __future__ import annotations

import asyncio
import io

from PIL import Image, UnidentifiedImageError
from sqlalchemy import update
from sqlmodel import col

from nameplate.errors import NameplateError
from nameplate.protocol.vocabulary import ErrorCode
from nameplate.store.engine import Sessions
from nameplate.store.models import Agent, AgentPhoto, utcnow

MAX_UPLOAD_BYTES = 2 * 1024 * 1024
# Far more pixels than any real portrait needs; a small file that claims more is a decompression bomb.
MAX_PIXELS = 40_000_000
SIDE = 256
ACCEPTED_FORMATS = {"PNG", "JPEG", "WEBP"}


def normalise_photo(data: bytes) -> bytes:
    """Return a 256×256 JPEG made from an uploaded PNG/JPEG/WebP, or raise a NameplateError saying why not."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise NameplateError(ErrorCode.too_large, "photos are limited to 2 MB", 413)
    try:
        with Image.open(io.BytesIO(data)) as probe:
            if probe.format not in ACCEPTED_FORMATS:
                raise NameplateError(ErrorCode.bad_image, "photos must be PNG, JPEG or WebP")
            width, height = probe.size
            if width * height > MAX_PIXELS:
                raise NameplateError(ErrorCode.bad_image, "that image has too many pixels")
            probe.verify()
        with Image.open(io.BytesIO(data)) as opened:
            opened.draft("RGB", (SIDE * 2, SIDE * 2))
            image = opened.convert("RGB")
    except NameplateError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise NameplateError(ErrorCode.bad_image, "that image has too many pixels") from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise NameplateError(ErrorCode.bad_image, "that file is not a readable PNG, JPEG or WebP image") from exc
    side = min(image.size)
    left = (image.width - side) // 2
    top = (image.height - side) // 2
    square = image.crop((left, top, left + side, top + side)).resize((SIDE, SIDE), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    square.save(out, format="JPEG", quality=88, optimize=True)
    return out.getvalue()


async def load_photo(sessions: Sessions, agent_id: str) -> AgentPhoto | None:
    async with sessions() as session:
        return await session.get(AgentPhoto, agent_id)


async def store_photo(sessions: Sessions, agent_id: str, data: bytes) -> None:
    # Decoding and resizing take tens of milliseconds: off the event loop, so chats do not stall.
    jpeg = await asyncio.to_thread(normalise_photo, data)
    async with sessions() as session:
        photo = await session.get(AgentPhoto, agent_id)
        if photo is None:
            session.add(AgentPhoto(agent_id=agent_id, content_type="image/jpeg", data=jpeg))
        else:
            photo.data, photo.content_type, photo.updated_at = jpeg, "image/jpeg", utcnow()
        await session.execute(
            update(Agent).where(col(Agent.id) == agent_id).values(photo_version=col(Agent.photo_version) + 1)
        )
        await session.commit()
